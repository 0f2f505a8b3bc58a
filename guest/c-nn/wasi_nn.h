/* wasi:nn@0.2.0-rc-2024-10-28 as the canonical ABI lowers it (what wit-bindgen's C
 * generator emits): lists are (pointer, length) pairs, results of more than one flat
 * value come back through a return area the caller passes. */
#ifndef WASI_NN_H
#define WASI_NN_H
#include <stdint.h>
#include <stddef.h>

#define NN_IMPORT(iface, name) __attribute__((import_module("wasi:nn/" iface "@0.2.0-rc-2024-10-28"), import_name(name)))

typedef int32_t nn_handle;
typedef struct { uint8_t *ptr; size_t len; } nn_bytes;
typedef struct { uint32_t *ptr; size_t len; } nn_dims;
typedef struct { char *ptr; size_t len; } nn_string;
typedef struct { nn_string name; nn_handle tensor; } nn_named_tensor;
typedef struct { nn_named_tensor *ptr; size_t len; } nn_named_tensors;
/* result<own<T>, own<error>> */
typedef struct { uint8_t is_err; nn_handle value; } nn_result;
/* result<list<named-tensor>, own<error>> */
typedef struct { uint8_t is_err; union { nn_named_tensors ok; nn_handle err; } u; } nn_compute_result;

enum { NN_FP16, NN_FP32, NN_FP64, NN_BF16, NN_U8, NN_I32, NN_I64 };
enum { NN_OPENVINO, NN_ONNX, NN_TENSORFLOW, NN_PYTORCH, NN_TENSORFLOWLITE, NN_GGML, NN_AUTODETECT };
enum { NN_CPU, NN_GPU, NN_TPU };

NN_IMPORT("tensor", "[constructor]tensor")
nn_handle nn_tensor_new(uint32_t *dims, size_t ndims, int32_t ty, uint8_t *data, size_t len);
NN_IMPORT("tensor", "[method]tensor.dimensions") void nn_tensor_dimensions(nn_handle t, nn_dims *ret);
NN_IMPORT("tensor", "[method]tensor.ty") int32_t nn_tensor_ty(nn_handle t);
NN_IMPORT("tensor", "[method]tensor.data") void nn_tensor_data(nn_handle t, nn_bytes *ret);
NN_IMPORT("tensor", "[resource-drop]tensor") void nn_tensor_drop(nn_handle t);
NN_IMPORT("graph", "load") void nn_load(nn_bytes *builders, size_t n, int32_t encoding, int32_t target, nn_result *ret);
NN_IMPORT("graph", "load-by-name") void nn_load_by_name(const char *name, size_t len, nn_result *ret);
NN_IMPORT("graph", "[method]graph.init-execution-context") void nn_init_execution_context(nn_handle g, nn_result *ret);
NN_IMPORT("graph", "[resource-drop]graph") void nn_graph_drop(nn_handle g);
NN_IMPORT("inference", "[method]graph-execution-context.compute")
void nn_compute(nn_handle ctx, nn_named_tensor *inputs, size_t n, nn_compute_result *ret);
NN_IMPORT("inference", "[resource-drop]graph-execution-context") void nn_context_drop(nn_handle ctx);
NN_IMPORT("errors", "[method]error.code") int32_t nn_error_code(nn_handle e);
NN_IMPORT("errors", "[method]error.data") void nn_error_data(nn_handle e, nn_string *ret);
NN_IMPORT("errors", "[resource-drop]error") void nn_error_drop(nn_handle e);

#endif
