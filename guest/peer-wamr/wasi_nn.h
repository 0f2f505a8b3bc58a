/* WAMR's wasi-nn calls (module `wasi_nn`), as its published wasi_nn.h declares them. */
#ifndef WASI_NN_H
#define WASI_NN_H
#include <stdint.h>
#include "wasi_nn_types.h"

#define WASI_NN_IMPORT(name) __attribute__((import_module("wasi_nn"), import_name(name)))

WASI_NN_IMPORT("load") wasi_nn_error load(graph_builder_array *builder, graph_encoding encoding,
                                          execution_target target, graph *g);
WASI_NN_IMPORT("load_by_name") wasi_nn_error load_by_name(const char *name, uint32_t name_len, graph *g);
WASI_NN_IMPORT("init_execution_context") wasi_nn_error init_execution_context(graph g,
                                                                              graph_execution_context *ctx);
WASI_NN_IMPORT("set_input") wasi_nn_error set_input(graph_execution_context ctx, uint32_t index, tensor *tensor);
WASI_NN_IMPORT("compute") wasi_nn_error compute(graph_execution_context ctx);
WASI_NN_IMPORT("get_output") wasi_nn_error get_output(graph_execution_context ctx, uint32_t index,
                                                      tensor_data output_tensor, uint32_t *output_tensor_size);
#endif
