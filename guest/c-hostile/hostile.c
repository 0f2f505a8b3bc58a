/* A hostile standard guest in C (tests/abi/test_hostile_args.py): wasi:nn calls whose counts
 * and sizes are the guest's to choose, each made by the command line.
 *
 *   hostile rank N            one tensor with N dimensions (one u8 of data), in memory
 *                             grown for them and never touched: the host must not read them
 *   hostile tensors N SIZE [RANK]  N tensors of SIZE u8s, none dropped (RANK dimensions:
 *                             SIZE, then ones)
 *   hostile builders N        graph.load with N empty builders (untouched memory too)
 *   hostile compute N NAME    load-by-name NAME, then compute on an fp32 tensor of N
 *                             dimensions of 65535 and 4 bytes of data
 *   hostile print N           N bytes to stdout, in lines of 64, whether or not anyone reads
 *                             them: the host must still end the call at its deadline
 *   hostile errors N NAME     load-by-name NAME (registered or not) N times, keeping every
 *                             error it gets: the host must bound what they hold
 *   hostile timeouts N NAME   load-by-name NAME, then compute on an fp32 N x N tensor again
 *                             and again: the first compute runs into the call's deadline
 *                             (`timeout`), each later one is a `timeout` at once; the host
 *                             must end the call soon after the first, however many come
 *
 * Prints what each wasi:nn call returned ("error: CODE: MESSAGE" for an error); a call
 * the host ends traps, and the host says why.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "wasi_nn.h"  /* guest/c-nn's */

void *cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size) {
    (void)old_size;
    if (new_size == 0) return (void *)align;
    void *p = realloc(ptr, new_size);
    if (!p) abort();
    return p;
}

static int report(nn_handle err) {
    nn_string msg;
    nn_error_data(err, &msg);
    printf("error: %d: %.*s\n", (int)nn_error_code(err), (int)msg.len, msg.ptr);
    nn_error_drop(err);
    return 0;
}

static uint32_t *untouched(size_t n) {
    size_t at = __builtin_wasm_memory_grow(0, n * 4 / 65536 + 1);
    if (at == (size_t)-1) abort();
    return (uint32_t *)(at * 65536);
}

static uint32_t *filled(size_t n, uint32_t value) {
    uint32_t *dims = malloc(n * 4 + 4);
    if (!dims) abort();
    for (size_t i = 0; i < n; i++) dims[i] = value;
    return dims;
}

static int run_main(int argc, char **argv) {
    static uint8_t one[4];
    if (argc == 3 && !strcmp(argv[1], "rank")) {
        size_t n = strtoul(argv[2], 0, 10);
        nn_tensor_new(untouched(n), n, NN_U8, one, 1);
        printf("made a tensor of %zu dimensions\n", n);
    } else if ((argc == 4 || argc == 5) && !strcmp(argv[1], "tensors")) {
        size_t n = strtoul(argv[2], 0, 10), size = strtoul(argv[3], 0, 10);
        size_t rank = argc == 5 ? strtoul(argv[4], 0, 10) : 1;
        uint32_t dims[64];
        if (rank < 1 || rank > 64) rank = 1;
        dims[0] = size;
        for (size_t d = 1; d < rank; d++) dims[d] = 1;
        uint8_t *data = calloc(size + 1, 1);
        for (size_t i = 0; i < n; i++) nn_tensor_new(dims, rank, NN_U8, data, size);
        printf("made %zu tensors\n", n);
    } else if (argc == 3 && !strcmp(argv[1], "builders")) {
        size_t n = strtoul(argv[2], 0, 10);
        nn_bytes *builders = (nn_bytes *)untouched(2 * n);  /* n empty builders at 0 */
        nn_result r;
        nn_load(builders, n, NN_ONNX, 0, &r);
        if (r.is_err) return report(r.value);
        printf("loaded\n");
    } else if (argc == 4 && !strcmp(argv[1], "compute")) {
        size_t n = strtoul(argv[2], 0, 10);
        nn_result g, c;
        nn_load_by_name(argv[3], strlen(argv[3]), &g);
        if (g.is_err) return report(g.value);
        nn_init_execution_context(g.value, &c);
        if (c.is_err) return report(c.value);
        nn_named_tensor input = {{"x", 1}, nn_tensor_new(filled(n, 65535), n, NN_FP32, one, 4)};
        nn_compute_result out;
        nn_compute(c.value, &input, 1, &out);
        if (out.is_err) return report(out.u.err);
        printf("computed\n");
    } else if (argc == 3 && !strcmp(argv[1], "print")) {
        static const char line[] = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n";
        size_t n = strtoul(argv[2], 0, 10), failed = 0;
        for (size_t i = 0; i < n; i += 64) failed += fwrite(line, 1, 64, stdout) != 64;
        fprintf(stderr, "printed, %zu writes failed\n", failed);
    } else if (argc == 4 && !strcmp(argv[1], "errors")) {
        size_t n = strtoul(argv[2], 0, 10), kept = 0;
        for (size_t i = 0; i < n; i++) {
            nn_result g;
            nn_load_by_name(argv[3], strlen(argv[3]), &g);
            kept += g.is_err;  /* never dropped */
        }
        printf("kept %zu errors\n", kept);
    } else if (argc == 4 && !strcmp(argv[1], "timeouts")) {
        size_t n = strtoul(argv[2], 0, 10), seen = 0;
        nn_result g, c;
        nn_load_by_name(argv[3], strlen(argv[3]), &g);
        if (g.is_err) return report(g.value);
        nn_init_execution_context(g.value, &c);
        if (c.is_err) return report(c.value);
        uint32_t dims[2] = {n, n};
        uint8_t *data = calloc(n * n + 1, 4);
        for (;;) {
            nn_named_tensor input = {{"x", 1}, nn_tensor_new(dims, 2, NN_FP32, data, n * n * 4)};
            nn_compute_result out;
            nn_compute(c.value, &input, 1, &out);
            if (!out.is_err) {
                printf("computed before the deadline\n");
                return 0;
            }
            if (!seen++) report(out.u.err);
            else nn_error_drop(out.u.err);
        }
    } else {
        fprintf(stderr, "usage: hostile rank N | tensors N SIZE | builders N | compute N NAME | print N | "
                        "errors N NAME | timeouts N NAME\n");
        return 1;
    }
    return 0;
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
