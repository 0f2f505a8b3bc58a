/* Azure IoT Operations' format module (samples/wasm/operators/format), in C: a map
   operator (world wasm-graph:processor/map-impl@1.1.0) that makes a 224x224 `rgb24`
   snapshot of a message's payload or a snapshot's frame, for the snapshot operator after
   it. As Azure's: a snapshot already in that shape passes unchanged; an encoded image
   (JPEG, PNG, BMP, GIF, PNM: what stb_image and the `image` crate both decode) is
   decoded, made RGB and resized with the `image` crate's Lanczos3 (image 0.24's
   imageops::resize: a vertical pass into f32, then a horizontal one, rounded); a payload
   that does not decode but is 150,528 bytes is taken as a raw frame (Azure's `.raw`
   layout); anything else is refused with Azure's "Unexpected image format or size.".
   TGA is left out: the crate does not guess it from bytes, stb would take raw frames
   for it. The image is decoded here, inside the guest, so no payload bytes reach a
   native parser in the host.

   stb_image.h is nothings/stb's stb_image v2.30 (commit 31c1ad37456438565541f4919958214b6e762fb4),
   unchanged; public domain or MIT, its licence at its end.

   Written to the canonical ABI by hand (guest/c-wasm-graph/wasm_graph.h). */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO
#define STBI_NO_FAILURE_STRINGS
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_ONLY_GIF
#define STBI_ONLY_PNM
/* the image crate's default limits allow 512 MiB per decoded image */
#define DECODED_MAX (512u << 20)
#include "stb_image.h"
#include "wasm_graph.h"

#define SIDE 224
#define FRAME_BYTES (SIDE * SIDE * 3)
#define CONTEXT "module-format/map"

static void log_info(const char *text) {
    log_text(LOG_INFO, CONTEXT, text);
}

/* --- image 0.24's imageops::resize with FilterType::Lanczos3, for RGB8 --- */

static float sinc(float t) {
    float a = t * (float)M_PI;
    return t == 0.0f ? 1.0f : sinf(a) / a;
}

static float lanczos3(float x) {
    return fabsf(x) < 3.0f ? sinc(x) * sinc(x / 3.0f) : 0.0f;
}

/* the taps of output sample `out` (left, count, normalised weights) */
static uint32_t taps(uint32_t out, uint32_t from, uint32_t to, float *ws, uint32_t *left_out) {
    float ratio = (float)from / (float)to;
    float sratio = ratio < 1.0f ? 1.0f : ratio;
    float support = 3.0f * sratio;
    float input = ((float)out + 0.5f) * ratio;
    int64_t left = (int64_t)floorf(input - support);
    left = left < 0 ? 0 : left > (int64_t)from - 1 ? (int64_t)from - 1 : left;
    int64_t right = (int64_t)ceilf(input + support);
    right = right < left + 1 ? left + 1 : right > (int64_t)from ? (int64_t)from : right;
    input -= 0.5f;
    float sum = 0.0f;
    uint32_t n = 0;
    for (int64_t i = left; i < right; i++, n++) {
        ws[n] = lanczos3(((float)i - input) / sratio);
        sum += ws[n];
    }
    for (uint32_t i = 0; i < n; i++)
        ws[i] /= sum;
    *left_out = (uint32_t)left;
    return n;
}

static uint8_t *resize(const uint8_t *rgb, uint32_t width, uint32_t height) {
    uint8_t *out = malloc(FRAME_BYTES);
    if (width == SIDE && height == SIDE) {
        memcpy(out, rgb, FRAME_BYTES);
        return out;
    }
    /* the widest window: 2 * 3 * ratio + 2 taps */
    uint32_t longest = width > height ? width : height;
    float *ws = malloc(sizeof(float) * (6 * (longest / SIDE + 1) + 4));
    float *mid = malloc(sizeof(float) * 3 * (size_t)width * SIDE);
    uint32_t left;
    for (uint32_t y = 0; y < SIDE; y++) {
        uint32_t n = taps(y, height, SIDE, ws, &left);
        for (uint32_t x = 0; x < width; x++)
            for (int c = 0; c < 3; c++) {
                float t = 0.0f;
                for (uint32_t i = 0; i < n; i++)
                    t += (float)rgb[((size_t)(left + i) * width + x) * 3 + c] * ws[i];
                mid[((size_t)y * width + x) * 3 + c] = t;
            }
    }
    for (uint32_t x = 0; x < SIDE; x++) {
        uint32_t n = taps(x, width, SIDE, ws, &left);
        for (uint32_t y = 0; y < SIDE; y++)
            for (int c = 0; c < 3; c++) {
                float t = 0.0f;
                for (uint32_t i = 0; i < n; i++)
                    t += mid[((size_t)y * width + left + i) * 3 + c] * ws[i];
                t = t < 0.0f ? 0.0f : t > 255.0f ? 255.0f : t;
                out[((size_t)y * SIDE + x) * 3 + c] = (uint8_t)roundf(t);
            }
    }
    free(mid);
    free(ws);
    return out;
}

/* whether a JPEG's segments up to its scan lie within it: stb_image reads zeros past the
   end, where the image crate's decoder refuses a JPEG cut inside its headers (a cut in
   the scan data both fill in) */
static int jpeg_headers_whole(bytes_t b) {
    if (b.len < 2 || b.ptr[0] != 0xFF || b.ptr[1] != 0xD8)
        return 1;  /* not a JPEG: nothing to check */
    for (uint32_t at = 2;;) {
        while (at < b.len && b.ptr[at] == 0xFF && at + 1 < b.len && b.ptr[at + 1] == 0xFF)
            at++;  /* fill bytes */
        if (at + 4 > b.len || b.ptr[at] != 0xFF)
            return 0;
        uint8_t marker = b.ptr[at + 1];
        uint32_t length = (uint32_t)b.ptr[at + 2] << 8 | b.ptr[at + 3];
        if (length < 2 || at + 2 + length > b.len)
            return 0;
        if (marker == 0xDA)  /* start of scan */
            return 1;
        at += 2 + length;
    }
}

/* the 224x224 RGB frame of encoded image bytes; NULL where they do not decode */
static uint8_t *decode(bytes_t payload) {
    int width, height, channels;
    if (payload.len > INT32_MAX || !jpeg_headers_whole(payload) ||
        !stbi_info_from_memory(payload.ptr, (int)payload.len, &width, &height, &channels) ||
        (uint64_t)width * (uint64_t)height * 4 > DECODED_MAX)
        return NULL;
    uint8_t *rgb = stbi_load_from_memory(payload.ptr, (int)payload.len, &width, &height, &channels, 3);
    if (rgb == NULL)
        return NULL;
    uint8_t *out = resize(rgb, (uint32_t)width, (uint32_t)height);
    stbi_image_free(rgb);
    return out;
}

/* --- the exports --- */

static result_t result;
/* the lists of the last result, freed when the next call begins (the host has copied them) */
static bytes_t held[3];

static void release_held(void) {
    for (int i = 0; i < 3; i++) {
        release(held[i]);
        held[i] = (bytes_t){0, 0};
    }
}

static result_t *fail(const char *text) {
    result.is_err = 1;
    result.v.error = held[0] = copy_text(text);
    return &result;
}

static void hold_snapshot(const snapshot_t *s) {
    if (s->timestamp.node_id.tag != 0)
        held[0] = s->timestamp.node_id.v.bytes;
    if (s->format.tag != 0)
        held[1] = s->format.v.bytes;
    if (s->frame.tag != 0)
        held[2] = s->frame.v.bytes;
}

__attribute__((export_name("wasm-graph:processor/map@1.1.0#process")))
result_t *process(data_model_t *input) {
    release_held();
    count_request(CONTEXT);
    data_model_t in = *input;
    free(input);
    bytes_t payload;
    timestamp_t timestamp;
    if (in.tag == DM_MESSAGE) {
        payload = take_bob(&in.v.message.payload);
        in.v.message.payload = (bob_t){.tag = 1, .v.bytes = {empty, 0}};
        timestamp = in.v.message.timestamp;
        release_message_except_timestamp(&in.v.message);
    } else if (in.tag == DM_SNAPSHOT) {
        snapshot_t *s = &in.v.snapshot;
        bytes_t format = peek_bob(&s->format);
        int ready = format.len == 5 && memcmp(format.ptr, "rgb24", 5) == 0 && s->width == SIDE && s->height == SIDE;
        if (s->format.tag == 0)
            release(format);
        if (ready) {  /* already what the snapshot operator takes */
            result.is_err = 0;
            result.v.ok = in;
            hold_snapshot(s);
            return &result;
        }
        release_bob(&s->format);
        payload = take_bob(&s->frame);
        timestamp = s->timestamp;
    } else {
        release_bob(&in.v.raw);
        return fail("Unexpected input type.");
    }
    uint8_t *frame = decode(payload);
    if (frame != NULL) {
        release(payload);
        payload = (bytes_t){frame, FRAME_BYTES};
    } else if (payload.len != FRAME_BYTES) {
        char text[128];
        snprintf(text, sizeof text, "Unexpected image format or size: expected %u bytes, got %u bytes",
                 (unsigned)FRAME_BYTES, (unsigned)payload.len);
        log_info(text);
        release(payload);
        release_bob(&timestamp.node_id);
        return fail("Unexpected image format or size.");
    }  /* else: not an image, but a raw frame's size: taken as one, as Azure's does */
    snapshot_t *out = &result.v.ok.v.snapshot;
    result.is_err = 0;
    result.v.ok.tag = DM_SNAPSHOT;
    out->timestamp = timestamp;
    out->format = (bob_t){.tag = 1, .v.bytes = copy_text("rgb24")};
    out->width = out->height = SIDE;
    out->frame = (bob_t){.tag = 1, .v.bytes = payload};
    hold_snapshot(out);
    return &result;
}

__attribute__((export_name("wasm-graph:processor/map@1.1.0#init")))
int32_t init(config_property_t *properties, uint32_t n_properties, module_schema_t *schemas, uint32_t n_schemas) {
    log_info("Initialization function invoked");
    for (uint32_t i = 0; i < n_properties; i++) {
        config_property_t *p = &properties[i];
        size_t n = p->key.len + p->value.len + 64;
        char *text = malloc(n);
        snprintf(text, n, "Initialization received the property (key='%.*s', value='%.*s').",
                 (int)p->key.len, (const char *)p->key.ptr, (int)p->value.len, (const char *)p->value.ptr);
        log_info(text);
        free(text);
    }
    release_configuration(properties, n_properties, schemas, n_schemas);
    return 1;
}
