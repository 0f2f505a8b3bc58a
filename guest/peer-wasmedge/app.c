/* A wasi-nn program as WasmEdge's examples make them (the wasi-nn crate's
 * `wasi_ephemeral_nn` imports, here from C), including sightglass's benchmark shape:
 *
 *   app [--bench] NAME        load_by_name(NAME): a model the runtime preloaded
 *                             (wasmedge --nn-preload NAME:ONNX:AUTO:FILE; wasmtime -S nn-graph)
 *   app [--bench] --load FILE read FILE (a preopened path, --dir) and load() its bytes
 *
 * Built with -DSIGHTGLASS, it imports bench.start/bench.end as sightglass's benchmarks do
 * (their runner defines them; other hosts run such a module with -W unknown-imports-*), and
 * --bench calls them around the inference.
 * The model takes two float32 [6] inputs (models/adder: a + b); prints its first output. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

#define NN(name) __attribute__((import_module("wasi_ephemeral_nn"), import_name(name)))
typedef struct { const uint8_t *ptr; uint32_t len; } builder;
typedef struct { const uint32_t *dims; uint32_t ndims; uint8_t type; const uint8_t *data; uint32_t len; } tensor;
NN("load") int32_t nn_load(const builder *b, uint32_t n, int32_t encoding, int32_t target, uint32_t *g);
NN("load_by_name") int32_t nn_load_by_name(const char *name, uint32_t len, uint32_t *g);
NN("init_execution_context") int32_t nn_init_execution_context(uint32_t g, uint32_t *ctx);
NN("set_input") int32_t nn_set_input(uint32_t ctx, uint32_t index, const tensor *t);
NN("compute") int32_t nn_compute(uint32_t ctx);
NN("get_output") int32_t nn_get_output(uint32_t ctx, uint32_t index, uint8_t *buf, uint32_t max, uint32_t *written);
#ifdef SIGHTGLASS
__attribute__((import_module("bench"), import_name("start"))) void bench_start(void);
__attribute__((import_module("bench"), import_name("end"))) void bench_end(void);
#else
static void bench_start(void) {}
static void bench_end(void) {}
#endif
enum { F32 = 1, ONNX = 1, CPU = 0 };

static int failed(const char *what, int32_t err) {
    if (err) fprintf(stderr, "peer-wasmedge: %s failed with errno %d\n", what, err);
    return err != 0;
}

int main(int argc, char **argv) {
    int bench = argc > 1 && strcmp(argv[1], "--bench") == 0;
    int by_bytes = argc > 2 + bench && strcmp(argv[1 + bench], "--load") == 0;
    if (argc != 2 + bench + by_bytes) { fprintf(stderr, "usage: app [--bench] (NAME | --load FILE)\n"); return 1; }
    const char *model = argv[1 + bench + by_bytes];
    if (bench) bench_start();
    uint32_t g, ctx;
    if (by_bytes) {
        FILE *f = fopen(model, "rb");
        if (!f) { fprintf(stderr, "peer-wasmedge: cannot open %s\n", model); return 1; }
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *bytes = malloc(size);
        if (fread(bytes, 1, size, f) != (size_t)size) return 1;
        fclose(f);
        builder b = {bytes, (uint32_t)size};
        if (failed("load", nn_load(&b, 1, ONNX, CPU, &g))) return 1;
    } else if (failed("load_by_name", nn_load_by_name(model, strlen(model), &g))) {
        return 1;
    }
    if (failed("init_execution_context", nn_init_execution_context(g, &ctx))) return 1;
    static const float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    static const uint32_t dims[1] = {6};
    tensor ta = {dims, 1, F32, (const uint8_t *)a, sizeof a}, tb = {dims, 1, F32, (const uint8_t *)b, sizeof b};
    if (failed("set_input", nn_set_input(ctx, 0, &ta)) || failed("set_input", nn_set_input(ctx, 1, &tb))) return 1;
    if (failed("compute", nn_compute(ctx))) return 1;
    if (bench) bench_end();
    float out[6];
    uint32_t written;
    if (failed("get_output", nn_get_output(ctx, 0, (uint8_t *)out, sizeof out, &written))) return 1;
    for (uint32_t j = 0; j < written / sizeof(float); j++) printf(j ? " %g" : "%g", out[j]);
    printf("\n");
    return 0;
}
