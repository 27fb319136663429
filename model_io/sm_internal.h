/*
 * Streaming-model internals shared by the manager, the file:// writer and the delta reader.
 */
#ifndef PS_MODEL_IO_SM_INTERNAL_H
#define PS_MODEL_IO_SM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "model_io/sm.h"

extern const struct ps_sm_writer_ops ps_sm_file_ops;
extern const struct ps_sm_writer_ops ps_sm_none_ops;

/** The delta header into 64 little-endian bytes (sets header_crc). */
void ps_sm_delta_header_encode(const struct ps_sm_delta_hdr *h, uint8_t out[64]);
/** Decode and check magic, header CRC, format, flags. 0 or PS_ECORRUPT with @err (no file name). */
int ps_sm_delta_header_decode(const uint8_t in[64], struct ps_sm_delta_hdr *h, char *err,
			      size_t errlen);
/** The 40-byte record header. */
void ps_sm_record_header_encode(const struct ps_sm_record_hdr *h, uint8_t out[40]);
void ps_sm_record_header_decode(const uint8_t in[40], struct ps_sm_record_hdr *h);
/**
 * The payload size of a record: keys then (rows only) floats. 0 with *ok false on overflow or a
 * type that is not one of enum ps_sm_rec_type.
 */
uint64_t ps_sm_record_payload_bytes(const struct ps_sm_record_hdr *h, bool *ok);

/** The manifest of @dir rewritten with @e[0, n) (temp, fsync, rename, fsync dir). */
int ps_sm_manifest_write(const char *dir, const struct ps_sm_manifest_entry *e, size_t n, char *err,
			 size_t errlen);
/** "delta-%06llu.psd". */
int ps_sm_delta_file_name(uint64_t seq, char *out, size_t len);

#endif
