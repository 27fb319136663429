#include <errno.h>
#include "scheduler/scheduler.h"
int ps_scheduler_main(const struct ps_scheduler_opts *opts) { return -ENOSYS; }
