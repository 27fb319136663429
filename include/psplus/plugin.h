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
 * The host pointer and its functions are valid only during the call. Plugins are never
 * unloaded. A plugin must not call exit() or abort().
 */
#ifndef PSPLUS_PLUGIN_H
#define PSPLUS_PLUGIN_H

#include <stdint.h>

#include <psplus/common.h>

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
};

/** The signature of the entry point a plugin exports. */
typedef int (*ps_plugin_init_fn)(const struct ps_plugin_host *host);

/**
 * ps_plugin_load() - dlopen @path and run its entry point (what `--plugin` does).
 * @err: receives a message naming the file and the reason on failure.
 *
 * Returns 0 or PS_EPLUGIN. Not thread-safe: call it before starting threads.
 */
PS_EXPORT int ps_plugin_load(const char *path, char *err, unsigned long errlen);

#ifdef __cplusplus
}
#endif

#endif
