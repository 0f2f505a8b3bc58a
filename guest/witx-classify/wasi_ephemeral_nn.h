/* wasi-nn's WITX ABI (module `wasi_ephemeral_nn`) for C, as wasinn's wit/witx/wasi-nn.witx
 * states it: every call returns an errno; results come back through the last pointer. */
#ifndef WASI_EPHEMERAL_NN_H
#define WASI_EPHEMERAL_NN_H
#include <stdint.h>

#define NN_IMPORT(name) __attribute__((import_module("wasi_ephemeral_nn"), import_name(name)))

typedef uint32_t nn_graph;
typedef uint32_t nn_context;
typedef struct { const uint8_t *ptr; uint32_t len; } nn_builder;
/* 20 bytes: dimensions, the type tag in one byte (then padding), data */
typedef struct {
    const uint32_t *dims; uint32_t ndims;
    uint8_t type;
    const uint8_t *data; uint32_t len;
} nn_tensor;

enum { NN_SUCCESS, NN_INVALID_ARGUMENT, NN_INVALID_ENCODING, NN_MISSING_MEMORY, NN_BUSY,
       NN_RUNTIME_ERROR, NN_UNSUPPORTED_OPERATION, NN_TOO_LARGE, NN_NOT_FOUND };
enum { NN_F16, NN_F32, NN_F64, NN_U8, NN_I32, NN_I64 };
enum { NN_OPENVINO, NN_ONNX, NN_TENSORFLOW, NN_PYTORCH, NN_TENSORFLOWLITE, NN_AUTODETECT };
enum { NN_CPU, NN_GPU, NN_TPU };

NN_IMPORT("load") int32_t nn_load(const nn_builder *builders, uint32_t count, int32_t encoding,
                                  int32_t target, nn_graph *graph);
NN_IMPORT("load_by_name") int32_t nn_load_by_name(const char *name, uint32_t len, nn_graph *graph);
NN_IMPORT("init_execution_context") int32_t nn_init_execution_context(nn_graph graph, nn_context *ctx);
NN_IMPORT("set_input") int32_t nn_set_input(nn_context ctx, uint32_t index, const nn_tensor *tensor);
NN_IMPORT("compute") int32_t nn_compute(nn_context ctx);
NN_IMPORT("get_output") int32_t nn_get_output(nn_context ctx, uint32_t index, uint8_t *buf, uint32_t max,
                                              uint32_t *written);
#endif
