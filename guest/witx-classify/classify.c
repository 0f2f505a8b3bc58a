/* Image classification, the classic wasi-nn example, as a wasm32-wasi core module:
 *
 *   witx-classify MODEL.onnx INPUT [LABELS]   load the model's bytes (graph load)
 *   witx-classify --name NAME INPUT [LABELS]  or a graph the host preloaded (load_by_name)
 *
 * INPUT is the preprocessed image: float32 [1, 3, 224, 224], raw little-endian. Prints the
 * five highest of the 1000 logits, with their labels when LABELS (one per line) is given.
 * Paths are the guest's: preopen their directories (--dir). Exit 1 on any failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "wasi_ephemeral_nn.h"

#define CLASSES 1000
static const uint32_t dims[4] = {1, 3, 224, 224};
#define INPUT_BYTES (1 * 3 * 224 * 224 * 4)

static uint8_t *read_file(const char *path, uint32_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "witx-classify: cannot open %s\n", path); return NULL; }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(size > 0 ? size : 1);
    if (!buf || fread(buf, 1, size, f) != (size_t)size) {
        fprintf(stderr, "witx-classify: cannot read %s\n", path);
        fclose(f); free(buf); return NULL;
    }
    fclose(f);
    *len = (uint32_t)size;
    return buf;
}

static int check(const char *what, int32_t err) {
    if (err != NN_SUCCESS) fprintf(stderr, "witx-classify: %s failed with errno %d\n", what, err);
    return err != NN_SUCCESS;
}

static const char *label(char **labels, int count, int i) {
    return labels && i < count ? labels[i] : "";
}

int main(int argc, char **argv) {
    int by_name = argc > 1 && strcmp(argv[1], "--name") == 0;
    if (argc < 3 + by_name) {
        fprintf(stderr, "usage: witx-classify (MODEL.onnx | --name NAME) INPUT.f32 [LABELS]\n");
        return 1;
    }
    const char *model = argv[1 + by_name], *input_path = argv[2 + by_name];
    const char *labels_path = argc > 3 + by_name ? argv[3 + by_name] : NULL;

    nn_graph graph;
    if (by_name) {
        if (check("load_by_name", nn_load_by_name(model, strlen(model), &graph))) return 1;
    } else {
        nn_builder builder;
        uint8_t *bytes = read_file(model, &builder.len);
        if (!bytes) return 1;
        builder.ptr = bytes;
        size_t n = strlen(model);
        int32_t encoding = n > 5 && strcmp(model + n - 5, ".onnx") == 0 ? NN_ONNX : NN_AUTODETECT;
        int32_t err = nn_load(&builder, 1, encoding, NN_CPU, &graph);
        free(bytes);
        if (check("load", err)) return 1;
    }
    nn_context ctx;
    if (check("init_execution_context", nn_init_execution_context(graph, &ctx))) return 1;

    uint32_t input_len;
    uint8_t *input = read_file(input_path, &input_len);
    if (!input) return 1;
    if (input_len != INPUT_BYTES) {
        fprintf(stderr, "witx-classify: %s has %u bytes; a float32 [1,3,224,224] tensor has %d\n",
                input_path, input_len, INPUT_BYTES);
        return 1;
    }
    nn_tensor tensor = {dims, 4, NN_F32, input, input_len};
    if (check("set_input", nn_set_input(ctx, 0, &tensor))) return 1;
    free(input);
    if (check("compute", nn_compute(ctx))) return 1;

    static float logits[CLASSES];
    uint32_t written = 0;
    if (check("get_output", nn_get_output(ctx, 0, (uint8_t *)logits, sizeof logits, &written))) return 1;
    if (written != sizeof logits) {
        fprintf(stderr, "witx-classify: the output has %u bytes, not %u logits\n", written, CLASSES);
        return 1;
    }

    char **labels = NULL;
    int nlabels = 0;
    uint32_t text_len;
    char *text = labels_path ? (char *)read_file(labels_path, &text_len) : NULL;
    if (text) {
        text = realloc(text, text_len + 1);
        text[text_len] = 0;
        labels = calloc(CLASSES, sizeof *labels);
        for (char *line = strtok(text, "\n"); line && nlabels < CLASSES; line = strtok(NULL, "\n"))
            labels[nlabels++] = line;
    }
    int top[5];
    for (int k = 0; k < 5; k++) {
        int best = -1;
        for (int i = 0; i < CLASSES; i++) {
            int taken = 0;
            for (int j = 0; j < k; j++) taken |= top[j] == i;
            if (!taken && (best < 0 || logits[i] > logits[best])) best = i;
        }
        top[k] = best;
        printf("%d. %-24s %8.3f  (class %d)\n", k + 1, label(labels, nlabels, best), logits[best], best);
    }
    return 0;
}
