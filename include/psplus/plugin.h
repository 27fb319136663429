/*
 * psplus plugins.
 *
 * `psplus --plugin PATH.so` dlopen()s PATH before parsing any other option and calls the
 * function the plugin exports under the name PS_PLUGIN_INIT_SYMBOL:
 *
 *	int psplus_plugin_init(const struct ps_plugin_host *host);
 *
 * The plugin checks host->abi_version (refuse to load, returning -ENOTSUP, when it is older than
 * the one it was built for), registers what it provides through the host's functions, and
 * returns 0 or a negative errno. A non-zero return, a missing symbol or a failed dlopen() stops
 * psplus with exit code 2 and a message naming the file.
 *
 * The host pointer is valid only during the call; what it registers stays registered. Plugins
 * are never unloaded. A plugin must not call exit() or abort().
 *
 * ABI. PS_PLUGIN_ABI_VERSION is bumped only when struct ps_plugin_host changes incompatibly
 * (a member removed, retyped or moved). New members are appended without a bump: a plugin that
 * uses a member must first check that host->size reaches past it (PS_PLUGIN_HOST_HAS()), so a
 * plugin built against a newer header still loads into an older psplus and can decline
 * politely. Version history:
 *   1: abi_version, size, register_url_scheme
 *   1 + register_model_writer (appended; size grew from 16 to 24 bytes on LP64)
 */
#ifndef PSPLUS_PLUGIN_H
#define PSPLUS_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include <psplus/common.h>

struct ps_sm_writer_ops; /* psplus/streaming_model.h */

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped when struct ps_plugin_host changes incompatibly; new members are only appended. */
#define PS_PLUGIN_ABI_VERSION 1
#define PS_PLUGIN_INIT_SYMBOL "psplus_plugin_init"

struct ps_plugin_host {
	/** PS_PLUGIN_ABI_VERSION of the psplus that loads the plugin. */
	uint32_t abi_version;
	/** sizeof(struct ps_plugin_host) in that psplus: members past it do not exist. */
	uint32_t size;
	/**
	 * Accept URLs "@scheme://..." for the kv path, checkpoints and streaming outputs.
	 * Returns 0, -EINVAL (bad name), -EEXIST (taken), -ENOSPC (table full).
	 */
	int (*register_url_scheme)(const char *scheme);
	/**
	 * Write streaming models to "@scheme://..." URLs with @ops (psplus/streaming_model.h):
	 * ps_plugin_register_model_writer(), below. Appended after ABI version 1: check
	 * PS_PLUGIN_HOST_HAS(host, register_model_writer) before calling it.
	 */
	int (*register_model_writer)(const char *scheme, const struct ps_sm_writer_ops *ops);
};

/** Does @host (as the loading psplus built it) have member @member? */
#define PS_PLUGIN_HOST_HAS(host, member)                                                     \
	((host)->size >= offsetof(struct ps_plugin_host, member) + sizeof((host)->member) && \
	 (host)->member != NULL)

/** The signature of the entry point a plugin exports. */
typedef int (*ps_plugin_init_fn)(const struct ps_plugin_host *host);

/**
 * ps_plugin_load() - dlopen @path and run its entry point (what `--plugin` does).
 * @err: receives a message naming the file and the reason on failure.
 *
 * Returns 0 or PS_EPLUGIN. Not thread-safe: call it before starting threads.
 */
PS_EXPORT int ps_plugin_load(const char *path, char *err, unsigned long errlen);

/**
 * ps_plugin_register_model_writer() - route streaming-model URLs "@scheme://..." to @ops: what
 * ps_plugin_host.register_model_writer does, also callable by a program that links libpsplus.
 *
 * @scheme: as for register_url_scheme; it is registered as a URL scheme too when it is not one
 *          already (a plugin may have registered it itself), so such URLs parse everywhere.
 * @ops: borrowed for the life of the process (a plugin's static table).
 *
 * Returns 0; -EINVAL for a bad name, NULL @ops, @ops->size too small for the members up to
 * close, a NULL member among open/write_dense/write_sparse/write_hash/commit/close or non-zero
 * flags; -EEXIST when the scheme is built in (file, none, zk) or already has a writer; -ENOSPC
 * when the table (32 writers) or the URL scheme table is full. Thread-safe.
 */
PS_EXPORT int ps_plugin_register_model_writer(const char *scheme,
					      const struct ps_sm_writer_ops *ops);

/**
 * ps_plugin_model_writer() - the ops a plugin registered for @scheme, or NULL. Thread-safe.
 * (Built-in schemes are not here: model_io's ps_sm_manager_get() knows them.)
 */
PS_EXPORT const struct ps_sm_writer_ops *ps_plugin_model_writer(const char *scheme);

#ifdef __cplusplus
}
#endif

#endif
