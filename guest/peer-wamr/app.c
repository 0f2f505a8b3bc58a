/* A wasi-nn program in the style of WAMR's own tests (test_tensorflow.c, utils.c), written
 * to WAMR's wasi_nn.h: the model is named by its file path, as WAMR's backends take it.
 *
 *   app MODEL          load_by_name(MODEL): the host opens the path (iwasm; wasinn --load-by-path)
 *   app --load MODEL   read MODEL through WASI (--dir) and load() its bytes, as utils.c does
 *
 * The model takes two float32 [6] inputs (models/adder: a + b); the program feeds 1..6 and
 * 0.5 each and prints its first output's six values. TARGET in the environment picks cpu or gpu. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "wasi_nn.h"

static int failed(const char *what, wasi_nn_error err) {
    if (err != success) fprintf(stderr, "peer-wamr: %s failed: error %d\n", what, err);
    return err != success;
}

static int load_file(const char *path, execution_target target, graph *g) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "peer-wamr: cannot open %s\n", path); return 1; }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *bytes = malloc(size);
    if (fread(bytes, 1, size, f) != (size_t)size) { fclose(f); return 1; }
    fclose(f);
    graph_builder builder = {bytes, (uint32_t)size};
    graph_builder_array array = {&builder, 1};
    return failed("load", load(&array, onnx, target, g));
}

int main(int argc, char **argv) {
    int by_bytes = argc > 2 && strcmp(argv[1], "--load") == 0;
    if (argc != 2 + by_bytes) { fprintf(stderr, "usage: app [--load] MODEL\n"); return 1; }
    const char *model = argv[1 + by_bytes];
    const char *t = getenv("TARGET");
    execution_target target = t && strcmp(t, "gpu") == 0 ? gpu : cpu;

    graph g;
    if (by_bytes ? load_file(model, target, &g) : failed("load_by_name", load_by_name(model, strlen(model), &g)))
        return 1;
    graph_execution_context ctx;
    if (failed("init_execution_context", init_execution_context(g, &ctx))) return 1;
    float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    uint32_t dims[1] = {6};
    tensor_dimensions d = {dims, 1};
    tensor ta = {&d, fp32, (uint8_t *)a}, tb = {&d, fp32, (uint8_t *)b};
    if (failed("set_input", set_input(ctx, 0, &ta)) || failed("set_input", set_input(ctx, 1, &tb))) return 1;
    if (failed("compute", compute(ctx))) return 1;
    float out[6];
    uint32_t size = 6; /* in and out: counted in 4-byte words, as WAMR's backends count it */
    if (failed("get_output", get_output(ctx, 0, (uint8_t *)out, &size))) return 1;
    for (uint32_t j = 0; j < size; j++) printf(j ? " %g" : "%g", out[j]);
    printf("\n");
    return 0;
}
