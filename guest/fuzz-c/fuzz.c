/* Echo exports for the fuzzer's tests, in C on the standard data path (wit/fuzz.wit,
 * interface fuzz-std): `echo` and `echo-bytes` are correct, the others have a bug
 * planted on purpose. The canonical ABI by hand: a list<u8> parameter arrives as
 * (pointer, length) in memory the host got from cabi_realloc; a list result goes back
 * through a return area holding (pointer, length). */
#include <stdlib.h>
#include "../c-nn/wasi_nn.h"  /* wasi:nn as the canonical ABI lowers it */

void *cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size) {
    (void)old_size;
    if (new_size == 0) return (void *)align;
    void *p = realloc(ptr, new_size);
    if (!p) abort();
    return p;
}

static nn_bytes ret_area;

static nn_handle echo_with(nn_handle t, int swap_i64) {
    nn_dims dims; nn_bytes data;
    nn_tensor_dimensions(t, &dims);
    int32_t ty = nn_tensor_ty(t);
    nn_tensor_data(t, &data);
    nn_tensor_drop(t);
    if (swap_i64 && ty == NN_I64) {
        for (size_t i = 0; i + 8 <= data.len; i += 8)
            for (int j = 0; j < 4; j++) {
                uint8_t b = data.ptr[i + j];
                data.ptr[i + j] = data.ptr[i + 7 - j];
                data.ptr[i + 7 - j] = b;
            }
    }
    nn_handle out = nn_tensor_new(dims.ptr, dims.len, ty, data.ptr, data.len);
    /* an empty list's pointer is cabi_realloc's stand-in (the alignment), not malloc's */
    if (dims.len) free(dims.ptr);
    if (data.len) free(data.ptr);
    return out;
}

__attribute__((export_name("wasinn:guest/fuzz-std@0.1.0#echo")))
nn_handle echo(nn_handle t) { return echo_with(t, 0); }

__attribute__((export_name("wasinn:guest/fuzz-std@0.1.0#echo-swapped-i64")))
nn_handle echo_swapped_i64(nn_handle t) { return echo_with(t, 1); }

__attribute__((export_name("wasinn:guest/fuzz-std@0.1.0#echo-bytes")))
nn_bytes *echo_bytes(uint8_t *ptr, size_t len) {
    ret_area.ptr = ptr; ret_area.len = len;
    return &ret_area;
}

__attribute__((export_name("wasinn:guest/fuzz-std@0.1.0#echo-bytes-threshold")))
nn_bytes *echo_bytes_threshold(uint8_t *ptr, size_t len) {
    ret_area.ptr = ptr; ret_area.len = len >= 4096 ? len - 1 : len;
    return &ret_area;
}
