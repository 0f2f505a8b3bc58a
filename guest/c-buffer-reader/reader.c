/* World wasinn:guest/buffer-reader (wit/operators.wit), written to the canonical ABI's
   flat signatures by hand: a guest whose realloc lies about where a buffer.read result
   may go, for the data path's span checks. */
#include <stdint.h>
#include <stdlib.h>

static uint32_t mode;

__attribute__((import_module("wasm-graph:processor/types@1.1.0"), import_name("[method]buffer.read")))
extern void buffer_read(int32_t handle, int32_t ret);
__attribute__((import_module("wasm-graph:processor/types@1.1.0"), import_name("[resource-drop]buffer")))
extern void buffer_drop(int32_t handle);

__attribute__((export_name("cabi_realloc")))
void *cabi_realloc(void *old, size_t old_size, size_t align, size_t new_size) {
    (void)old_size; (void)align;
    if (mode == 1)
        return (void *)(uintptr_t)0xFFFF0000u;  /* past any 32-bit memory this small */
    if (mode == 2)  /* one byte before the end: the span runs past it */
        return (void *)(uintptr_t)(__builtin_wasm_memory_size(0) * 65536 - 1);
    return realloc(old, new_size ? new_size : 1);
}

__attribute__((export_name("read")))
uint32_t read_export(int32_t handle, uint32_t m) {
    uint32_t ret[2] = {0, 0};
    mode = m;
    buffer_read(handle, m == 3 ? (int32_t)0xFFFFFFF0u : (int32_t)(uintptr_t)ret);
    mode = 0;
    buffer_drop(handle);
    const uint8_t *p = (const uint8_t *)(uintptr_t)ret[0];
    uint32_t h = 2166136261u;
    for (uint32_t i = 0; i < ret[1]; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    free((void *)p);
    return h ^ ret[1];
}
