/* signature.h: reads the signature_def map out of a serialized MetaGraphDef.
 *
 * TF_LoadSessionFromSavedModel hands back the loaded MetaGraphDef as protobuf bytes.
 * The TensorFlow C API has no protobuf accessors, so this walks the wire format by hand
 * (no protobuf library needed) and keeps only what a client needs to call a signature:
 *
 *   MetaGraphDef   field 5  signature_def  map<string, SignatureDef>
 *   SignatureDef   field 1  inputs         map<string, TensorInfo>
 *                  field 2  outputs        map<string, TensorInfo>
 *                  field 3  method_name    string
 *   TensorInfo     field 1  name           string "op_name:output_index"
 *                  field 2  dtype          DataType enum (same numbers as TF_DataType)
 *   map entry      field 1  key,  field 2  value
 *
 * Every other field is skipped by its wire type. Plain C99, no TensorFlow headers, so
 * the Go client compiles the same file through cgo.
 */
#ifndef TFCHARGEN_SIGNATURE_H_
#define TFCHARGEN_SIGNATURE_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  char *key;  /* the map key, e.g. "prompt" */
  char *name; /* the graph tensor, e.g. "generate_prompt:0" */
  int dtype;  /* DataType enum value; 0 (DT_INVALID) when absent */
} tfc_tensor_info;

typedef struct {
  char *key;         /* e.g. "generate" */
  char *method_name; /* e.g. "tensorflow/serving/predict" */
  tfc_tensor_info *inputs;
  size_t n_inputs;
  tfc_tensor_info *outputs;
  size_t n_outputs;
} tfc_signature;

typedef struct {
  tfc_signature *items;
  size_t n;
} tfc_signature_map;

/* Parses a serialized MetaGraphDef. Returns 0 and fills *out (free it with
 * tfc_signatures_free) or returns -1 with a message in err (always NUL-terminated)
 * and *out empty. Signatures, inputs and outputs come sorted by key (the serialized
 * map order is arbitrary); a repeated key replaces the earlier entry, as protobuf map
 * semantics say. */
int tfc_signatures_parse(const void *data, size_t len, tfc_signature_map *out, char *err,
                         size_t errlen);
void tfc_signatures_free(tfc_signature_map *m);

const tfc_signature *tfc_signature_find(const tfc_signature_map *m, const char *key);
const tfc_tensor_info *tfc_signature_input(const tfc_signature *s, const char *key);
const tfc_tensor_info *tfc_signature_output(const tfc_signature *s, const char *key);

/* Splits "op:3" into "op" and 3 ("op" alone means index 0). Returns 0, or -1 when the
 * name is malformed or the op name does not fit in op_size bytes. */
int tfc_tensor_name_split(const char *name, char *op, size_t op_size, int *index);

/* "DT_STRING" etc. for the dtypes a signature commonly uses; "DT_<n>" otherwise
 * (in a static buffer: not thread-safe for unknown values). */
const char *tfc_dtype_name(int dtype);

#ifdef __cplusplus
}
#endif

#endif /* TFCHARGEN_SIGNATURE_H_ */
