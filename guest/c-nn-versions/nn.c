/* guest/nn-versions in C, against wasi:nn@0.2.0-rc-2024-08-19 (the canonical ABI by hand,
 * as wit-bindgen's C generator emits it): set-input, compute(), get-output on the
 * context. Exports wasinn:guest/nn-versions (wit/worlds.wit, world nn-versions-2024-08-19):
 * load-file, infer, make-error. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NN(iface, name) __attribute__((import_module("wasi:nn/" iface "@0.2.0-rc-2024-08-19"), import_name(name)))
#define EXPORT(name) __attribute__((export_name("wasinn:guest/nn-versions@0.1.0#" name)))

typedef int32_t handle;
typedef struct { uint8_t *ptr; size_t len; } bytes;
typedef struct { uint32_t *ptr; size_t len; } dims;
/* result<own<T>, own<error>> and result<_, own<error>> */
typedef struct { uint8_t is_err; handle value; } result;

enum { FP32 = 1 };
enum { ONNX = 1 };
enum { CPU = 0 };

NN("tensor", "[constructor]tensor") handle tensor_new(uint32_t *d, size_t n, int32_t ty, uint8_t *data, size_t len);
NN("tensor", "[method]tensor.dimensions") void tensor_dimensions(handle t, dims *ret);
NN("tensor", "[method]tensor.data") void tensor_data(handle t, bytes *ret);
NN("tensor", "[resource-drop]tensor") void tensor_drop(handle t);
NN("graph", "load") void load(bytes *builders, size_t n, int32_t encoding, int32_t target, result *ret);
NN("graph", "[method]graph.init-execution-context") void init_execution_context(handle g, result *ret);
NN("inference", "[method]graph-execution-context.set-input")
void set_input(handle ctx, const char *name, size_t len, handle t, result *ret);
NN("inference", "[method]graph-execution-context.compute") void compute(handle ctx, result *ret);
NN("inference", "[method]graph-execution-context.get-output")
void get_output(handle ctx, const char *name, size_t len, result *ret);
NN("errors", "[method]error.code") int32_t error_code(handle e);
NN("errors", "[method]error.data") void error_data(handle e, bytes *ret);
NN("errors", "[resource-drop]error") void error_drop(handle e);

void *cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size) {
    (void)old_size;
    if (new_size == 0) return (void *)align;
    void *p = realloc(ptr, new_size);
    if (!p) abort();
    return p;
}

/* What the exports return: result<_, string>, result<tuple<list<u32>, list<u8>>, string>,
 * option<string>, each behind one pointer. */
static struct { uint8_t tag; uint32_t a, b, c, d; } ret;

static int32_t err_text(const char *text, size_t n) {
    char *copy = malloc(n ? n : 1);
    memcpy(copy, text, n);
    ret.tag = 1; ret.a = (uint32_t)(uintptr_t)copy; ret.b = (uint32_t)n;
    return (int32_t)(uintptr_t)&ret;
}

static int32_t failed(handle err) {
    static const char *codes[] = {"invalid-argument", "invalid-encoding", "timeout", "runtime-error",
                                  "unsupported-operation", "too-large", "not-found", "security", "unknown"};
    bytes msg;
    error_data(err, &msg);
    int32_t code = error_code(err);
    error_drop(err);
    char *text = malloc(msg.len + 32);
    int n = snprintf(text, msg.len + 32, "%s: %.*s", codes[code], (int)msg.len, (char *)msg.ptr);
    if (msg.len) free(msg.ptr);
    int32_t r = err_text(text, (size_t)n);
    free(text);
    return r;
}

static handle context = -1;

EXPORT("load-file") int32_t load_file(char *path, size_t len) {
    char name[512];
    snprintf(name, sizeof name, "%.*s", (int)len, path);
    free(path);
    FILE *f = fopen(name, "rb");
    if (!f) return err_text("cannot open the model", 21);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    bytes model = {malloc(size), (size_t)size};
    fread(model.ptr, 1, size, f);
    fclose(f);
    result r;
    load(&model, 1, ONNX, CPU, &r);
    free(model.ptr);
    if (r.is_err) return failed(r.value);
    handle graph = r.value;
    init_execution_context(graph, &r);
    if (r.is_err) return failed(r.value);
    context = r.value;
    ret.tag = 0;
    return (int32_t)(uintptr_t)&ret;
}

EXPORT("infer") int32_t infer(char *input, size_t input_len, uint32_t *d, size_t n, uint8_t *data, size_t data_len,
                              char *output, size_t output_len) {
    handle t = tensor_new(d, n, FP32, data, data_len);
    result r;
    set_input(context, input, input_len, t, &r);  /* the tensor is moved to the host */
    if (n) free(d);
    if (data_len) free(data);
    free(input);
    if (!r.is_err) compute(context, &r);
    if (!r.is_err) get_output(context, output, output_len, &r);
    free(output);
    if (r.is_err) return failed(r.value);
    dims out_dims;
    bytes out_data;
    tensor_dimensions(r.value, &out_dims);
    tensor_data(r.value, &out_data);
    tensor_drop(r.value);
    ret.tag = 0;
    ret.a = (uint32_t)(uintptr_t)out_dims.ptr; ret.b = (uint32_t)out_dims.len;
    ret.c = (uint32_t)(uintptr_t)out_data.ptr; ret.d = (uint32_t)out_data.len;
    return (int32_t)(uintptr_t)&ret;
}

/* This release has no error constructor: none. */
EXPORT("make-error") int32_t make_error(char *message, size_t len) {
    if (len) free(message);
    ret.tag = 0;
    return (int32_t)(uintptr_t)&ret;
}
