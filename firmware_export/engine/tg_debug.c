/* tinygru engine: op-output recorder of debug builds (TG_DEBUG), host use only. */
#include "tinygru.h"

#if defined(TG_DEBUG)

#define TG_DEBUG_ENTRIES 256
#define TG_DEBUG_BYTES 16384

static int8_t debug_data[TG_DEBUG_BYTES];
static int32_t debug_id[TG_DEBUG_ENTRIES];
static int32_t debug_offset[TG_DEBUG_ENTRIES];
static int32_t debug_size[TG_DEBUG_ENTRIES];
static int32_t debug_count;
static int32_t debug_used;

void tg_debug_reset(void)
{
    debug_count = 0;
    debug_used = 0;
}

void tg_debug_record(int32_t op_id, const int8_t *data, int32_t size)
{
    if (debug_count >= TG_DEBUG_ENTRIES || debug_used + size > TG_DEBUG_BYTES) {
        return;
    }
    for (int32_t i = 0; i < size; ++i) {
        debug_data[debug_used + i] = data[i];
    }
    debug_id[debug_count] = op_id;
    debug_offset[debug_count] = debug_used;
    debug_size[debug_count] = size;
    debug_count++;
    debug_used += size;
}

int32_t tg_debug_reserve(int32_t op_id, int32_t size)
{
    if (debug_count >= TG_DEBUG_ENTRIES || debug_used + size > TG_DEBUG_BYTES) {
        return -1;
    }
    debug_id[debug_count] = op_id;
    debug_offset[debug_count] = debug_used;
    debug_size[debug_count] = size;
    debug_used += size;
    return debug_count++;
}

void tg_debug_fill(int32_t entry, int32_t at, const int8_t *data, int32_t size)
{
    if (entry < 0 || entry >= debug_count || at < 0 || at + size > debug_size[entry]) {
        return;
    }
    for (int32_t i = 0; i < size; ++i) {
        debug_data[debug_offset[entry] + at + i] = data[i];
    }
}

int32_t tg_debug_count(void)
{
    return debug_count;
}

int32_t tg_debug_entry(int32_t i, int32_t *offset, int32_t *size)
{
    *offset = debug_offset[i];
    *size = debug_size[i];
    return debug_id[i];
}

const int8_t *tg_debug_data(void)
{
    return debug_data;
}

#else
typedef int tg_debug_unused; /* ISO C forbids an empty translation unit */
#endif
