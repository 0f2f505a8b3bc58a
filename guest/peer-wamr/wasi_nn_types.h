/* The types of WAMR's wasi-nn ABI (module `wasi_nn`), in the shape of WAMR's published
 * core/iwasm/libraries/wasi-nn/include/wasi_nn_types.h: written here from that interface. */
#ifndef WASI_NN_TYPES_H
#define WASI_NN_TYPES_H
#include <stdint.h>

typedef enum { success = 0, invalid_argument, invalid_encoding, missing_memory, busy, runtime_error,
               unsupported_operation, too_large, not_found } wasi_nn_error;
typedef wasi_nn_error error;

typedef struct { uint32_t *buf; uint32_t size; } tensor_dimensions;
typedef enum { fp16 = 0, fp32, fp64, u8, i32, i64 } tensor_type;
typedef uint8_t *tensor_data;
typedef struct {
    tensor_dimensions *dimensions;
    tensor_type type;
    tensor_data data;
} tensor;

typedef struct { uint8_t *buf; uint32_t size; } graph_builder;
typedef struct { graph_builder *buf; uint32_t size; } graph_builder_array;
typedef uint32_t graph;
typedef enum { openvino = 0, onnx, tensorflow, pytorch, tensorflowlite, ggml, autodetect,
               unknown_backend } graph_encoding;
typedef enum { cpu = 0, gpu, tpu } execution_target;
typedef uint32_t graph_execution_context;
#endif
