/*
 * Test plugins, built three times with different TEST_PLUGIN_KIND:
 *   0: registers the URL scheme "testfs" and succeeds
 *   1: its entry point fails with -EPERM
 *   2: exports no entry point at all
 */
#include <errno.h>

#include <psplus/plugin.h>

#if TEST_PLUGIN_KIND != 2
PS_EXPORT int psplus_plugin_init(const struct ps_plugin_host *host);

int psplus_plugin_init(const struct ps_plugin_host *host)
{
	if (host->abi_version < 1 || host->size < sizeof(*host))
		return -ENOTSUP;
#if TEST_PLUGIN_KIND == 0
	return host->register_url_scheme("testfs");
#else
	return -EPERM;
#endif
}
#else
PS_EXPORT int psplus_plugin_something_else(void);
int psplus_plugin_something_else(void)
{
	return 0;
}
#endif
