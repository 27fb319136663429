/*
 * Plugin loading: dlopen, then the documented entry point.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>

#include <psplus/error.h>
#include <psplus/plugin.h>

#include "common/log.h"
#include "common/url.h"

int ps_plugin_load(const char *path, char *err, unsigned long errlen)
{
	const struct ps_plugin_host host = {
		.abi_version = PS_PLUGIN_ABI_VERSION,
		.size = sizeof(struct ps_plugin_host),
		.register_url_scheme = ps_url_register_scheme,
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
