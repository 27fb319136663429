#include <errno.h>
#include "server/server.h"
int ps_server_main(const struct ps_server_opts *opts) { return -ENOSYS; }
