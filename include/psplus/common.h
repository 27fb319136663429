/*
 * psplus: shared definitions of the public API.
 */
#ifndef PSPLUS_COMMON_H
#define PSPLUS_COMMON_H

/** Marks a symbol exported from libpsplus (everything else is hidden). */
#define PS_EXPORT __attribute__((visibility("default")))

#endif
