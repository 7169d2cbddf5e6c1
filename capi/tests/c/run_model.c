/*
 * Runs a kiln artefact from C through libkiln_runtime; built by capi/tests/c_api.rs against
 * the artefact's model.h (which includes kiln.h).
 *
 *     run_model ARTIFACT_DIR OUT_DIR FILE SHAPE [FILE SHAPE ...]
 *
 * One FILE SHAPE pair per input, in model.h order: FILE holds the raw row-major elements
 * (of the dtype the model expects), SHAPE is the dims separated by commas ("1,16"; "" for a
 * scalar). Prints one line per input, `input NAME DTYPE D0 D1 ...` (as the model declares
 * it: -1 for a symbolic dim), writes output i to OUT_DIR/output<i>.bin and prints one line
 * per output, `output NAME DTYPE D0 D1 ...`. On failure prints `error: MESSAGE` to stderr
 * and exits 1.
 */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RANK 8

static char error[512];

static int fail(const char *message) {
    fprintf(stderr, "error: %s\n", message);
    return 1;
}

/* Parses "d0,d1,..." into dims; returns the rank, or -1 if malformed. */
static int parse_shape(const char *text, int64_t *dims) {
    int rank = 0;
    while (*text) {
        char *end;
        if (rank == MAX_RANK) return -1;
        dims[rank++] = strtoll(text, &end, 10);
        if (end == text || (*end != ',' && *end != '\0')) return -1;
        text = *end == ',' ? end + 1 : end;
    }
    return rank;
}

/* Reads a whole file into a new buffer; NULL on failure. */
static void *read_file(const char *path, long *size) {
    FILE *f = fopen(path, "rb");
    void *buf;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(*size > 0 ? (size_t)*size : 1);
    if (buf && fread(buf, 1, (size_t)*size, f) != (size_t)*size) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    kiln_tensor inputs[KILN_MODEL_INPUTS + 1];
    int64_t dims[KILN_MODEL_INPUTS + 1][MAX_RANK];
    void *data[KILN_MODEL_INPUTS + 1] = {0};
    kiln_outputs *outputs;
    kiln_model *model;
    size_t i, j;
    int status = 0;

    if (argc != 3 + 2 * KILN_MODEL_INPUTS)
        return fail("usage: run_model ARTIFACT_DIR OUT_DIR (FILE SHAPE) per input");
    model = kiln_load(argv[1], 1, error, sizeof error);
    if (!model) return fail(error);
    if (kiln_input_count(model) != KILN_MODEL_INPUTS ||
        kiln_output_count(model) != KILN_MODEL_OUTPUTS) {
        kiln_free(model);
        return fail("model.h does not describe this artefact");
    }
    for (i = 0; i < KILN_MODEL_INPUTS; i++) {
        printf("input %s %d", kiln_input_name(model, i), (int)kiln_input_dtype(model, i));
        for (j = 0; j < kiln_input_rank(model, i); j++)
            printf(" %lld", (long long)kiln_input_dim(model, i, j));
        printf("\n");
    }
    for (i = 0; i < KILN_MODEL_INPUTS; i++) {
        long size;
        int rank = parse_shape(argv[4 + 2 * i], dims[i]);
        if (rank < 0) {
            status = fail("malformed SHAPE");
            goto done;
        }
        data[i] = read_file(argv[3 + 2 * i], &size);
        if (!data[i]) {
            status = fail("cannot read an input file");
            goto done;
        }
        inputs[i].dtype = kiln_input_dtype(model, i);
        inputs[i].rank = (size_t)rank;
        inputs[i].shape = dims[i];
        inputs[i].data = data[i];
    }
    if (kiln_run(model, inputs, KILN_MODEL_INPUTS, &outputs, error, sizeof error) != 0) {
        status = fail(error);
        goto done;
    }
    for (i = 0; i < kiln_outputs_count(outputs); i++) {
        const kiln_tensor *t = kiln_outputs_get(outputs, i);
        size_t count = 1;
        char path[4096];
        FILE *f;
        printf("output %s %d", kiln_output_name(model, i), (int)t->dtype);
        for (j = 0; j < t->rank; j++) {
            printf(" %lld", (long long)t->shape[j]);
            count *= (size_t)t->shape[j];
        }
        printf("\n");
        snprintf(path, sizeof path, "%s/output%u.bin", argv[2], (unsigned)i);
        f = fopen(path, "wb");
        if (!f || fwrite(t->data, kiln_dtype_size(t->dtype), count, f) != count) {
            status = fail("cannot write an output file");
        }
        if (f) fclose(f);
    }
    kiln_outputs_free(outputs);
done:
    for (i = 0; i < KILN_MODEL_INPUTS; i++) free(data[i]);
    kiln_free(model);
    return status;
}
