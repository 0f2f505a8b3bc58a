/* World wasinn:guest/span-result (wit/operators.wit), written to the canonical ABI's flat
   signatures by hand: a C map operator that hands its payload back as `bytes`, or, told
   so by the payload, a span its memory does not hold, for the data path's result checks.
   Its post-return scribbles over the bytes before freeing them, as an allocator may:
   the host must have read them before. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

__attribute__((import_module("wasm-graph:processor/types@1.1.0"), import_name("[method]buffer.read")))
extern void buffer_read(int32_t handle, int32_t ret);
__attribute__((import_module("wasm-graph:processor/types@1.1.0"), import_name("[resource-drop]buffer")))
extern void buffer_drop(int32_t handle);

__attribute__((export_name("cabi_realloc")))
void *cabi_realloc(void *old, size_t old_size, size_t align, size_t new_size) {
    (void)old_size; (void)align;
    return realloc(old, new_size ? new_size : 1);
}

static uint8_t *payload;
static uint32_t payload_len;
static _Alignas(8) uint8_t ret_area[32];
static const char NOT_BARE[] = "expected a bare buffer (data-model::buffer-or-bytes)";

__attribute__((export_name("wasm-graph:processor/map@1.1.0#init")))
int32_t init(int32_t properties, int32_t n_properties, int32_t schemas, int32_t n_schemas) {
    (void)properties; (void)n_properties; (void)schemas; (void)n_schemas;
    return 1;
}

/* process(message: data-model) -> result<data-model, error>: its one parameter is passed
   in memory (more than 16 flat values), its result through this return area:
   +0 result case, +8 data-model case, +16 buffer-or-bytes case, +20 address, +24 length. */
__attribute__((export_name("wasm-graph:processor/map@1.1.0#process")))
int32_t process(uint8_t *args) {
    memset(ret_area, 0, sizeof ret_area);
    if (args[0] != 0 || args[8] != 0) {  /* not data-model::buffer-or-bytes(buffer) */
        ret_area[0] = 1;
        *(uint32_t *)(ret_area + 8) = (uint32_t)(uintptr_t)NOT_BARE;
        *(uint32_t *)(ret_area + 12) = sizeof NOT_BARE - 1;
        return (int32_t)(uintptr_t)ret_area;
    }
    int32_t handle = *(int32_t *)(args + 12);
    uint32_t got[2] = {0, 0};
    buffer_read(handle, (int32_t)(uintptr_t)got);
    buffer_drop(handle);
    free(args);
    payload = (uint8_t *)(uintptr_t)got[0];
    payload_len = got[1];
    uint32_t addr = got[0], n = got[1];
    if (n >= 8 && memcmp(payload, "span:out", 8) == 0) {
        addr = 0xFFFF0000u, n = 16;  /* past any memory this small */
    } else if (n >= 8 && memcmp(payload, "span:end", 8) == 0) {
        addr = (uint32_t)__builtin_wasm_memory_size(0) * 65536 - 1, n = 16;  /* runs past its end */
    }
    ret_area[16] = 1;
    *(uint32_t *)(ret_area + 20) = addr;
    *(uint32_t *)(ret_area + 24) = n;
    return (int32_t)(uintptr_t)ret_area;
}

__attribute__((export_name("cabi_post_wasm-graph:processor/map@1.1.0#process")))
void process_post_return(int32_t ret) {
    (void)ret;
    volatile uint8_t *bytes = payload;  /* volatile: a store before free() is otherwise dropped */
    for (uint32_t i = 0; bytes != NULL && i < payload_len; i++)
        bytes[i] = 0xEE;
    free(payload);
    payload = NULL;
}
