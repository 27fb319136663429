/*
 * Plugin loading: dlopen, then the documented entry point. Also the table of streaming-model
 * writers plugins register (the manager in model_io/ looks schemes up here, so common/ does not
 * depend on model_io/).
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <psplus/error.h>
#include <psplus/plugin.h>
#include <psplus/streaming_model.h>

#include "common/log.h"
#include "common/url.h"

#define MAX_MODEL_WRITERS 32

static pthread_mutex_t writers_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	char scheme[PS_URL_SCHEME_MAX];
	const struct ps_sm_writer_ops *ops;
} writers[MAX_MODEL_WRITERS];
static size_t nwriters;

static bool ops_ok(const struct ps_sm_writer_ops *ops)
{
	/* Every member up to close is required; errmsg (after it) is optional. */
	if (!ops || ops->size < offsetof(struct ps_sm_writer_ops, close) + sizeof(ops->close))
		return false;
	return !ops->flags && ops->open && ops->write_dense && ops->write_sparse &&
	       ops->write_hash && ops->commit && ops->close;
}

int ps_plugin_register_model_writer(const char *scheme, const struct ps_sm_writer_ops *ops)
{
	size_t len = scheme ? strlen(scheme) : 0;
	struct ps_url u;
	char url[PS_URL_SCHEME_MAX + 8];
	int rc;

	if (!len || len >= PS_URL_SCHEME_MAX || !ops_ok(ops))
		return -EINVAL;
	if (!strcmp(scheme, "file") || !strcmp(scheme, "none") || !strcmp(scheme, "zk"))
		return -EEXIST;
	pthread_mutex_lock(&writers_lock);
	rc = nwriters == MAX_MODEL_WRITERS ? -ENOSPC : 0;
	for (size_t i = 0; i < nwriters && !rc; i++)
		if (!strcmp(writers[i].scheme, scheme))
			rc = -EEXIST;
	if (!rc) {
		/* Make the scheme parse as a URL unless its plugin registered it already. */
		snprintf(url, sizeof(url), "%s://", scheme);
		rc = ps_url_parse(url, &u, NULL, 0);
		if (rc == PS_EUNSUPPORTED_SCHEME)
			rc = ps_url_register_scheme(scheme);
		else if (rc)
			rc = -EINVAL; /* not a valid scheme name */
	}
	if (!rc) {
		memcpy(writers[nwriters].scheme, scheme, len + 1);
		writers[nwriters++].ops = ops;
	}
	pthread_mutex_unlock(&writers_lock);
	return rc;
}

const struct ps_sm_writer_ops *ps_plugin_model_writer(const char *scheme)
{
	const struct ps_sm_writer_ops *ops = NULL;

	if (!scheme)
		return NULL;
	pthread_mutex_lock(&writers_lock);
	for (size_t i = 0; i < nwriters && !ops; i++)
		if (!strcmp(writers[i].scheme, scheme))
			ops = writers[i].ops;
	pthread_mutex_unlock(&writers_lock);
	return ops;
}

int ps_plugin_load(const char *path, char *err, unsigned long errlen)
{
	const struct ps_plugin_host host = {
		.abi_version = PS_PLUGIN_ABI_VERSION,
		.size = sizeof(struct ps_plugin_host),
		.register_url_scheme = ps_url_register_scheme,
		.register_model_writer = ps_plugin_register_model_writer,
	};
	ps_plugin_init_fn init;
	void *h;
	int rc;

	/* RTLD_NOW: fail here, naming the file, rather than at the first call into it. */
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		snprintf(err, errlen, "plugin '%s' failed to load: %s", path, dlerror());
		return PS_EPLUGIN;
	}
	*(void **)&init = dlsym(h, PS_PLUGIN_INIT_SYMBOL);
	if (!init) {
		snprintf(err, errlen, "plugin '%s' has no entry point %s()", path,
			 PS_PLUGIN_INIT_SYMBOL);
		dlclose(h);
		return PS_EPLUGIN;
	}
	rc = init(&host);
	if (rc) {
		snprintf(err, errlen, "plugin '%s': %s() failed: %s", path, PS_PLUGIN_INIT_SYMBOL,
			 ps_strerror(rc));
		dlclose(h);
		return PS_EPLUGIN;
	}
	/* Kept open for the life of the process: what it registered points into it. */
	ps_log_info("plugin", "loaded %s", path);
	return 0;
}
