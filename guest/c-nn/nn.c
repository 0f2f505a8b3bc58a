/* A standard wasi:nn guest in C (the canonical ABI by hand, as wit-bindgen emits it).
 *
 *   run: nn-c [NAME]                   load-by-name NAME (default efficientnet-lite0), one
 *                                      inference on a fixed input, print the top-1 class
 *        nn-c MODEL.onnx ITERATIONS     graph.load of a preopened file, then ITERATIONS x
 *                                      (tensor -> compute -> data), per-step times in us
 *        nn-c copy SIZE N               N x a SIZE-byte tensor and its data(), timed
 *        nn-c time NAME N               load-by-name NAME, then N x compute on the fixed
 *                                      input, each timed alone; prints their median in us
 *   exports wasinn:guest/std-nn (echo, load-model, set-input, infer) and
 *   wasinn:guest/std-misuse (wit/worlds.wit)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "wasi_nn.h"

static int trap_in_realloc;

void *cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size) {
    (void)old_size; (void)align;
    if (trap_in_realloc) __builtin_trap();
    if (new_size == 0) return (void *)align;
    void *p = realloc(ptr, new_size);
    if (!p) abort();
    return p;
}

/* Lists of length 0 point at `align` (see cabi_realloc), not at memory to free. */
static void release(void *ptr, size_t len) {
    if (len) free(ptr);
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int fail(const char *what, nn_handle err) {
    nn_string msg;
    nn_error_data(err, &msg);
    fprintf(stderr, "%s failed: %.*s\n", what, (int)msg.len, msg.ptr);
    free(msg.ptr);
    nn_error_drop(err);
    return 1;
}

#define EXPORT(name) __attribute__((export_name("wasinn:guest/std-nn@0.1.0#" name)))

/* result<_, string> and result<u32, string> as the canonical ABI returns them */
static struct { uint8_t is_err; uint32_t a; uint32_t b; } ret_area;

static int32_t *err_string(nn_handle err) {
    static const char *codes[] = {"invalid-argument", "invalid-encoding", "timeout", "runtime-error",
                                  "unsupported-operation", "too-large", "not-found", "security", "unknown"};
    nn_string msg;
    nn_error_data(err, &msg);
    int32_t code = nn_error_code(err);
    nn_error_drop(err);
    char *text = malloc(msg.len + 32);
    int n = snprintf(text, msg.len + 32, "%s: %.*s", codes[code], (int)msg.len, msg.ptr);
    free(msg.ptr);
    ret_area.is_err = 1; ret_area.a = (uint32_t)(uintptr_t)text; ret_area.b = (uint32_t)n;
    return (int32_t *)&ret_area;
}

static nn_handle context = -1;
static struct { char *name; size_t name_len; nn_dims dims; int32_t ty; nn_bytes data; } input;

EXPORT("echo") nn_handle echo(nn_handle t) {
    nn_dims dims; nn_bytes data;
    nn_tensor_dimensions(t, &dims);
    int32_t ty = nn_tensor_ty(t);
    nn_tensor_data(t, &data);
    nn_tensor_drop(t);
    nn_handle out = nn_tensor_new(dims.ptr, dims.len, ty, data.ptr, data.len);
    release(dims.ptr, dims.len);
    release(data.ptr, data.len);
    return out;
}

EXPORT("load-model") int32_t *load_model(nn_handle model) {
    nn_bytes bytes;
    nn_tensor_data(model, &bytes);
    nn_tensor_drop(model);
    nn_result r;
    nn_load(&bytes, 1, NN_ONNX, NN_CPU, &r);
    release(bytes.ptr, bytes.len);
    if (r.is_err) return err_string(r.value);
    nn_handle graph = r.value;
    nn_init_execution_context(graph, &r);
    nn_graph_drop(graph);
    if (r.is_err) return err_string(r.value);
    if (context >= 0) nn_context_drop(context);
    context = r.value;
    ret_area.is_err = 0;
    return (int32_t *)&ret_area;
}

EXPORT("set-input") void set_input(char *name, size_t name_len, nn_handle t) {
    release(input.name, input.name_len); release(input.dims.ptr, input.dims.len); release(input.data.ptr, input.data.len);
    input.name = name; input.name_len = name_len;
    nn_tensor_dimensions(t, &input.dims);
    input.ty = nn_tensor_ty(t);
    nn_tensor_data(t, &input.data);
    nn_tensor_drop(t);
}

EXPORT("infer") int32_t *infer(void) {
    nn_handle t = nn_tensor_new(input.dims.ptr, input.dims.len, input.ty, input.data.ptr, input.data.len);
    nn_named_tensor in = { { input.name, input.name_len }, t };
    nn_compute_result cr;
    nn_compute(context, &in, 1, &cr);
    if (cr.is_err) return err_string(cr.u.err);
    nn_bytes out;
    nn_tensor_data(cr.u.ok.ptr[0].tensor, &out);
    for (size_t i = 0; i < cr.u.ok.len; i++) { nn_tensor_drop(cr.u.ok.ptr[i].tensor); free(cr.u.ok.ptr[i].name.ptr); }
    free(cr.u.ok.ptr);
    free(out.ptr);
    ret_area.is_err = 0; ret_area.a = (uint32_t)out.len;
    return (int32_t *)&ret_area;
}

static int copy_bench(size_t size, int n) {
    uint8_t *buf = malloc(size);
    memset(buf, 7, size);
    uint32_t dims[1] = {(uint32_t)size};
    double a = now_us();
    for (int i = 0; i < n; i++) nn_tensor_drop(nn_tensor_new(dims, 1, NN_U8, buf, size));
    double b = now_us();
    nn_handle t = nn_tensor_new(dims, 1, NN_U8, buf, size);
    double c = now_us();
    for (int i = 0; i < n; i++) { nn_bytes out; nn_tensor_data(t, &out); free(out.ptr); }
    double d = now_us();
    printf("size %zu: tensor %.1f us (%.2f GB/s), data %.1f us (%.2f GB/s)\n", size, (b - a) / n,
           size * n / (b - a) / 1e3, (d - c) / n, size * n / (d - c) / 1e3);
    return 0;
}

/* The same input in every guest and host that compares results: i % 255 / 255 - 0.5. */
static uint8_t *fixed_input(size_t n) {
    uint8_t *input = malloc(n);
    for (size_t i = 0; i < n / 4; i++) ((float *)input)[i] = (float)(i % 255) / 255.0f - 0.5f;
    return input;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Only compute is timed: the input tensor is made before it and the outputs dropped
 * after, so hosts are compared on the call that runs the model. */
static int compute_bench(const char *name, int n) {
    if (n < 1) { fprintf(stderr, "time: N must be at least 1\n"); return 1; }
    nn_result r;
    nn_load_by_name(name, strlen(name), &r);
    if (r.is_err) return fail("load-by-name", r.value);
    nn_handle graph = r.value;
    nn_init_execution_context(graph, &r);
    if (r.is_err) return fail("init-execution-context", r.value);
    nn_handle ctx = r.value;
    uint32_t dims[4] = {1, 3, 224, 224};
    size_t size = 1 * 3 * 224 * 224 * 4;
    uint8_t *input = fixed_input(size);
    int warm_up = 3;
    double *times = malloc(n * sizeof(double));
    for (int it = -warm_up; it < n; it++) {
        nn_named_tensor in = { { "input", 5 }, nn_tensor_new(dims, 4, NN_FP32, input, size) };
        nn_compute_result cr;
        double a = now_us();
        nn_compute(ctx, &in, 1, &cr);
        double b = now_us();
        if (cr.is_err) return fail("compute", cr.u.err);
        if (it >= 0) times[it] = b - a;
        for (size_t i = 0; i < cr.u.ok.len; i++) { nn_tensor_drop(cr.u.ok.ptr[i].tensor); free(cr.u.ok.ptr[i].name.ptr); }
        free(cr.u.ok.ptr);
    }
    qsort(times, n, sizeof(double), cmp_double);
    printf("compute median %.1f us over %d\n", n % 2 ? times[n / 2] : (times[n / 2 - 1] + times[n / 2]) / 2, n);
    nn_context_drop(ctx);
    nn_graph_drop(graph);
    return 0;
}

static int run_main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "copy") == 0) return copy_bench(strtoul(argv[2], 0, 10), atoi(argv[3]));
    if (argc == 4 && strcmp(argv[1], "time") == 0) return compute_bench(argv[2], atoi(argv[3]));
    int by_name = argc < 3;
    const char *source = argc >= 2 ? argv[1] : "efficientnet-lite0";
    int iterations = by_name ? 1 : atoi(argv[2]);
    nn_result r;
    double t0 = now_us();
    long size = 0;
    if (by_name) {
        nn_load_by_name(source, strlen(source), &r);
        if (r.is_err) return fail("load-by-name", r.value);
    } else {
        FILE *f = fopen(source, "rb");
        if (!f) { perror(source); return 1; }
        fseek(f, 0, SEEK_END); size = ftell(f); fseek(f, 0, SEEK_SET);
        nn_bytes model = { malloc(size), (size_t)size };
        if (fread(model.ptr, 1, size, f) != (size_t)size) { perror("read"); return 1; }
        fclose(f);
        nn_load(&model, 1, NN_ONNX, NN_CPU, &r);
        free(model.ptr);
        if (r.is_err) return fail("load", r.value);
    }
    nn_handle graph = r.value;
    double t1 = now_us();
    nn_init_execution_context(graph, &r);
    if (r.is_err) return fail("init-execution-context", r.value);
    nn_handle ctx = r.value;
    if (!by_name) printf("load %.0f us (%ld bytes)\n", t1 - t0, size);
    uint32_t dims[4] = {1, 3, 224, 224};
    size_t n = 1 * 3 * 224 * 224 * 4;
    uint8_t *input = fixed_input(n);
    for (int it = 0; it < iterations; it++) {
        double a = now_us();
        nn_handle t = nn_tensor_new(dims, 4, NN_FP32, input, n);
        double b = now_us();
        nn_named_tensor in = { { "input", 5 }, t };  /* the model's input name: wasmtime's OpenVINO matches by name */
        nn_compute_result cr;
        nn_compute(ctx, &in, 1, &cr);
        if (cr.is_err) return fail("compute", cr.u.err);
        double c = now_us();
        nn_bytes out;
        nn_tensor_data(cr.u.ok.ptr[0].tensor, &out);
        double d = now_us();
        float best = -1e30f; size_t arg = 0;
        for (size_t i = 0; i < out.len / 4; i++) if (((float *)out.ptr)[i] > best) { best = ((float *)out.ptr)[i]; arg = i; }
        if (by_name)
            printf("top-1 class %zu\n", arg);
        else
            printf("iter %d tensor %.1f compute %.1f data %.1f total %.1f us top1 %zu bytes %zu\n",
                   it, b - a, c - b, d - c, d - a, arg, out.len);
        for (size_t i = 0; i < cr.u.ok.len; i++) { nn_tensor_drop(cr.u.ok.ptr[i].tensor); free(cr.u.ok.ptr[i].name.ptr); }
        free(cr.u.ok.ptr);
        free(out.ptr);
    }
    nn_context_drop(ctx);
    nn_graph_drop(graph);
    return 0;
}

/* --- wasinn:guest/std-misuse: calls whose spans lie ------------------------------ */
static struct { uint32_t ptr; uint32_t len; } misuse_ret;

__attribute__((export_name("wasinn:guest/std-misuse@0.1.0#misuse")))
void *misuse(char *kind, size_t len) {
    static uint32_t dims[2] = {1, 16};
    static uint8_t data[16];
    char k[64] = {0};
    memcpy(k, kind, len < 63 ? len : 63);
    free(kind);
    const char *said = "no error";
    nn_result r;
    if (!strcmp(k, "tensor-data-past-end")) {
        nn_tensor_new(dims, 2, NN_U8, (uint8_t *)0xFFFFFF00u, 0x1000);
    } else if (!strcmp(k, "tensor-dims-past-end")) {
        nn_tensor_new((uint32_t *)0xFFFFFFF0u, 8, NN_U8, data, 16);
    } else if (!strcmp(k, "tensor-length-wraps")) {
        nn_tensor_new(dims, 2, NN_U8, data, 0xFFFFFFF8u);
    } else if (!strcmp(k, "tensor-dims-misaligned")) {
        nn_tensor_new((uint32_t *)((uint8_t *)dims + 1), 1, NN_U8, data, 16);
    } else if (!strcmp(k, "data-return-area-past-end")) {
        nn_tensor_data(nn_tensor_new(dims, 2, NN_U8, data, 16), (nn_bytes *)0xFFFFFFF8u);
    } else if (!strcmp(k, "data-realloc-traps")) {
        nn_handle t = nn_tensor_new(dims, 2, NN_U8, data, 16);
        nn_bytes out;
        trap_in_realloc = 1;
        nn_tensor_data(t, &out);
    } else if (!strcmp(k, "load-builder-past-end") || !strcmp(k, "load-list-past-end")) {
        nn_bytes bad = { (uint8_t *)0xFFFF0000u, 0x20000 };
        if (!strcmp(k, "load-builder-past-end")) nn_load(&bad, 1, NN_ONNX, NN_CPU, &r);
        else nn_load((nn_bytes *)0xFFFFFFF0u, 4, NN_ONNX, NN_CPU, &r);
        if (r.is_err) { int32_t *e = err_string(r.value); misuse_ret.ptr = ((uint32_t *)e)[1]; misuse_ret.len = ((uint32_t *)e)[2]; return &misuse_ret; }
        said = "loaded?!";
    } else {
        said = "unknown kind";
    }
    misuse_ret.ptr = (uint32_t)(uintptr_t)strdup(said); misuse_ret.len = strlen(said);
    return &misuse_ret;
}

__attribute__((export_name("wasi:cli/run@0.2.0#run")))
int32_t run(void) {
    /* argv through WASI preview1: this is a reactor, so nobody called main for us */
    size_t argc, size;
    if (__wasi_args_sizes_get(&argc, &size) != 0) return 1;
    char **argv = calloc(argc + 1, sizeof(char *));
    char *buf = malloc(size);
    if (__wasi_args_get((uint8_t **)argv, (uint8_t *)buf) != 0) return 1;
    int rc = run_main((int)argc, argv);
    fflush(stdout);
    return rc == 0 ? 0 : 1;
}
