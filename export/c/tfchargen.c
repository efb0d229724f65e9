/* tfchargen-c: calls a tfchargen SavedModel's `generate` signature through the
 * TensorFlow C API (the libraries of the pip wheel) and prints the `text` output,
 * one line per prompt.
 *
 *   tfchargen-c [--max-length N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
 *               [--repeat N] [--timing] [--signature-dump] [--print-contract] MODEL PROMPT...
 *   tfchargen-c --stream [--chunk N] [--max-length N] [...] MODEL PROMPT
 *
 * --stream prints one prompt's text chunk by chunk as it arrives: `start`, then
 * `continue` with each returned state_bytes until the row ends or has --max-length new
 * characters (tfchargen/streaming.py's chunks), the same bytes as without --stream.
 *
 * MODEL is an export base (its newest numbered version is used) or one version's
 * directory, as for `tfchargen generate --model`. Defaults are tfchargen/contract.py's
 * SERVING_DEFAULTS; row i's seed is row_seed(--seed, i) (tfchargen/seeds.py).
 * Tensor names come from the SavedModel's signature_def map (signature.c), never from
 * guesses. Any error: one line "tfchargen-c: <message>" on stderr, exit status 1
 * (2 for usage errors).
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "quiet.h"
#include "signature.h"
#include "tensorflow/c/c_api.h"
#include "tensorflow/c/tf_tstring.h"

#define PROG "tfchargen-c"
#define SIGNATURE "generate"
#define USAGE                                                                             \
  "usage: " PROG " [--max-length N] [--temperature T] [--top-k K] [--top-p P] [--seed S]" \
  " [--repeat N] [--timing] [--signature-dump] [--print-contract] [--stream [--chunk N]]"  \
  " MODEL PROMPT..."

enum { EXIT_ERR = 1, EXIT_USAGE = 2 };

/* ---- errors: exactly one line on stderr --------------------------------------- */

static void print_error(const char *fmt, ...) {
  char buf[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  /* TF messages span lines ("\n\t [[{{node ...}}]]"): fold every whitespace run that
   * holds a line break or tab into one space, and drop trailing whitespace. */
  char out[sizeof buf];
  size_t j = 0;
  for (size_t i = 0; buf[i];) {
    if (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t') {
      size_t k = i;
      int fold = 0;
      for (; buf[k] == ' ' || buf[k] == '\n' || buf[k] == '\r' || buf[k] == '\t'; k++)
        fold |= buf[k] != ' ';
      if (fold)
        out[j++] = ' ';
      else
        while (i < k) out[j++] = buf[i++];
      i = k;
    } else {
      out[j++] = buf[i++];
    }
  }
  while (j > 0 && out[j - 1] == ' ') j--;
  out[j] = '\0';
  fprintf(stderr, PROG ": %s\n", out);
}

static const char *code_name(TF_Code c) {
  static const char *names[] = {"OK",
                                "CANCELLED",
                                "UNKNOWN",
                                "INVALID_ARGUMENT",
                                "DEADLINE_EXCEEDED",
                                "NOT_FOUND",
                                "ALREADY_EXISTS",
                                "PERMISSION_DENIED",
                                "RESOURCE_EXHAUSTED",
                                "FAILED_PRECONDITION",
                                "ABORTED",
                                "OUT_OF_RANGE",
                                "UNIMPLEMENTED",
                                "INTERNAL",
                                "UNAVAILABLE",
                                "DATA_LOSS",
                                "UNAUTHENTICATED"};
  return (unsigned)c < sizeof names / sizeof *names ? names[c] : "ERROR";
}

static void print_status(const TF_Status *s) {
  print_error("%s: %s", code_name(TF_GetCode(s)), TF_Message(s));
}

/* ---- the contract (tfchargen/contract.py: SIGNATURES, SERVING_DEFAULTS) --------- */

/* `--print-contract` prints these as JSON; tests compare them with contract.py. */
#define DEFAULT_MAX_LENGTH 100
#define DEFAULT_TEMPERATURE 0.8f
#define DEFAULT_TOP_K 0
#define DEFAULT_TOP_P 1.0f
#define DEFAULT_SEED 0
#define DEFAULT_CHUNK 32     /* tfchargen/streaming.py DEFAULT_CHUNK */
#define MAX_NEW_CHARS 2048   /* contract.py MAX_NEW_CHARS: one call's (one chunk's) cap */

enum { IN_PROMPT, IN_MAX_LENGTH, IN_TEMPERATURE, IN_TOP_K, IN_TOP_P, IN_SEED, N_INPUTS };
static const char *const input_keys[N_INPUTS] = {"prompt", "max_length", "temperature",
                                                 "top_k",  "top_p",      "seed"};
static const TF_DataType input_types[N_INPUTS] = {TF_STRING, TF_INT32, TF_FLOAT,
                                                  TF_INT32,  TF_FLOAT, TF_INT64};

/* TensorFlow's dtype names, as contract.py writes them. */
static const char *dtype_json_name(TF_DataType t) {
  switch (t) {
    case TF_STRING: return "string";
    case TF_INT32: return "int32";
    case TF_FLOAT: return "float32";
    case TF_INT64: return "int64";
    default: return "?";
  }
}

static void print_contract(void) {
  printf("{\"signature\": \"" SIGNATURE "\", \"inputs\": {");
  for (int k = 0; k < N_INPUTS; k++)
    printf("%s\"%s\": \"%s\"", k ? ", " : "", input_keys[k], dtype_json_name(input_types[k]));
  printf("}, \"defaults\": {\"max_length\": %d, \"temperature\": %.9g, \"top_k\": %d,"
         " \"top_p\": %.9g, \"seed\": %d}}\n",
         DEFAULT_MAX_LENGTH, (double)DEFAULT_TEMPERATURE, DEFAULT_TOP_K, (double)DEFAULT_TOP_P,
         DEFAULT_SEED);
}

/* The seed row `index` sends for the user's seed: tfchargen/seeds.py row_seed, whose
 * docstring is the specification (SplitMix64 output index + 1 from state `user_seed`,
 * masked to int64 >= 0, never 0; user seed 0 = every row unseeded). */
static int64_t row_seed(int64_t user_seed, uint64_t index) {
  if (user_seed == 0) return 0;
  uint64_t z = (uint64_t)user_seed + (index + 1) * UINT64_C(0x9E3779B97F4A7C15);
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  z = z ^ (z >> 31);
  z = z & UINT64_C(0x7FFFFFFFFFFFFFFF);
  return z ? (int64_t)z : 1;
}

/* ---- options ------------------------------------------------------------------ */

typedef struct {
  int32_t max_length;
  float temperature;
  int32_t top_k;
  float top_p;
  int64_t seed;
  long repeat;
  int timing;
  int signature_dump;
  int stream;
  long chunk;
  const char *model_dir;
  char **prompts;
  int n_prompts;
} options;

static int parse_int(const char *flag, const char *s, long long lo, long long hi, long long *v) {
  char *end;
  errno = 0;
  long long x = strtoll(s, &end, 10);
  if (*s == '\0' || isspace((unsigned char)*s) || *end != '\0' || errno == ERANGE || x < lo ||
      x > hi) {
    print_error("%s: expected an integer in [%lld, %lld], got '%s'", flag, lo, hi, s);
    return -1;
  }
  *v = x;
  return 0;
}

static int parse_float(const char *flag, const char *s, float *v) {
  char *end;
  errno = 0;
  float x = strtof(s, &end);
  if (*s == '\0' || isspace((unsigned char)*s) || *end != '\0' || (errno == ERANGE && isinf(x))) {
    print_error("%s: expected a number, got '%s'", flag, s);
    return -1;
  }
  *v = x; /* range checks (temperature >= 0, top_p in (0, 1]) are the graph's */
  return 0;
}

/* Returns 0 to run, 1 when --help or --print-contract was printed, -1 on a usage error
 * (already printed). */
static int parse_args(int argc, char **argv, options *o) {
  o->max_length = DEFAULT_MAX_LENGTH;
  o->temperature = DEFAULT_TEMPERATURE;
  o->top_k = DEFAULT_TOP_K;
  o->top_p = DEFAULT_TOP_P;
  o->seed = DEFAULT_SEED;
  o->repeat = 1;
  o->timing = 0;
  o->signature_dump = 0;
  o->stream = 0;
  o->chunk = DEFAULT_CHUNK;
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0) {
      i++;
      break;
    }
    if (strncmp(a, "--", 2) != 0) break; /* first positional: options end here */
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      printf("%s\n", USAGE);
      return 1;
    }
    if (strcmp(a, "--print-contract") == 0) {
      print_contract();
      return 1;
    }
    if (strcmp(a, "--timing") == 0) {
      o->timing = 1;
      continue;
    }
    if (strcmp(a, "--signature-dump") == 0) {
      o->signature_dump = 1;
      continue;
    }
    if (strcmp(a, "--stream") == 0) {
      o->stream = 1;
      continue;
    }
    /* --flag VALUE or --flag=VALUE */
    char name[32];
    const char *val;
    const char *eq = strchr(a, '=');
    if (eq) {
      size_t n = (size_t)(eq - a);
      if (n >= sizeof name) n = sizeof name - 1;
      memcpy(name, a, n);
      name[n] = '\0';
      val = eq + 1;
    } else {
      snprintf(name, sizeof name, "%s", a);
      val = NULL;
    }
    int known = strcmp(name, "--max-length") == 0 || strcmp(name, "--temperature") == 0 ||
                strcmp(name, "--top-k") == 0 || strcmp(name, "--top-p") == 0 ||
                strcmp(name, "--seed") == 0 || strcmp(name, "--repeat") == 0 ||
                strcmp(name, "--chunk") == 0;
    if (!known) {
      print_error("unknown option '%s'; %s", a, USAGE);
      return -1;
    }
    if (!val) {
      if (i + 1 >= argc) {
        print_error("%s needs a value; %s", name, USAGE);
        return -1;
      }
      val = argv[++i];
    }
    long long v;
    if (strcmp(name, "--max-length") == 0) {
      if (parse_int(name, val, INT32_MIN, INT32_MAX, &v)) return -1;
      o->max_length = (int32_t)v;
    } else if (strcmp(name, "--top-k") == 0) {
      if (parse_int(name, val, INT32_MIN, INT32_MAX, &v)) return -1;
      o->top_k = (int32_t)v;
    } else if (strcmp(name, "--seed") == 0) {
      if (parse_int(name, val, INT64_MIN, INT64_MAX, &v)) return -1;
      o->seed = (int64_t)v;
    } else if (strcmp(name, "--chunk") == 0) {
      if (parse_int(name, val, 1, MAX_NEW_CHARS, &v)) return -1;
      o->chunk = (long)v;
    } else if (strcmp(name, "--repeat") == 0) {
      if (parse_int(name, val, 1, 100000000, &v)) return -1;
      o->repeat = (long)v;
    } else if (strcmp(name, "--temperature") == 0) {
      if (parse_float(name, val, &o->temperature)) return -1;
    } else {
      if (parse_float(name, val, &o->top_p)) return -1;
    }
  }
  if (i >= argc) {
    print_error("missing MODEL; %s", USAGE);
    return -1;
  }
  o->model_dir = argv[i++];
  o->prompts = argv + i;
  o->n_prompts = argc - i;
  if (o->n_prompts == 0 && !o->signature_dump) {
    print_error("missing PROMPT; %s", USAGE);
    return -1;
  }
  if (o->stream && o->n_prompts != 1) {
    print_error("--stream prints one text: give one PROMPT");
    return -1;
  }
  return 0;
}

/* ---- the signature's inputs ----------------------------------------------------- */

static int resolve_in(TF_Graph *graph, const char *signature, const tfc_tensor_info *ti,
                      TF_Output *out) {
  char op[1024];
  int index;
  if (tfc_tensor_name_split(ti->name, op, sizeof op, &index) != 0) {
    print_error("signature '%s': malformed tensor name '%s' for '%s'", signature, ti->name,
                ti->key);
    return -1;
  }
  out->oper = TF_GraphOperationByName(graph, op);
  out->index = index;
  if (!out->oper || index >= TF_OperationNumOutputs(out->oper)) {
    print_error("signature '%s': tensor '%s' (for '%s') is not in the graph", signature,
                ti->name, ti->key);
    return -1;
  }
  return 0;
}

static int resolve(TF_Graph *graph, const tfc_tensor_info *ti, TF_Output *out) {
  return resolve_in(graph, SIGNATURE, ti, out);
}

/* Finds the feeds and the `text` fetch; checks the signature has exactly the inputs
 * this client knows, with the dtypes it sends. */
static int bind_signature(TF_Graph *graph, const tfc_signature_map *sigs, TF_Output feeds[N_INPUTS],
                          TF_Output *fetch) {
  const tfc_signature *sig = tfc_signature_find(sigs, SIGNATURE);
  if (!sig) {
    print_error("the SavedModel has no '" SIGNATURE "' signature (it has %zu others)", sigs->n);
    return -1;
  }
  for (size_t i = 0; i < sig->n_inputs; i++) {
    int k;
    for (k = 0; k < N_INPUTS && strcmp(sig->inputs[i].key, input_keys[k]) != 0; k++) {
    }
    if (k == N_INPUTS) {
      print_error("signature '" SIGNATURE "' has an input '%s' this client does not know",
                  sig->inputs[i].key);
      return -1;
    }
  }
  for (int k = 0; k < N_INPUTS; k++) {
    const tfc_tensor_info *ti = tfc_signature_input(sig, input_keys[k]);
    if (!ti) {
      print_error("signature '" SIGNATURE "' has no input '%s'", input_keys[k]);
      return -1;
    }
    if (ti->dtype != (int)input_types[k]) {
      print_error("signature '" SIGNATURE "': input '%s' is %s, expected %s", input_keys[k],
                  tfc_dtype_name(ti->dtype), tfc_dtype_name((int)input_types[k]));
      return -1;
    }
    if (resolve(graph, ti, &feeds[k]) != 0) return -1;
  }
  const tfc_tensor_info *text = tfc_signature_output(sig, "text");
  if (!text || text->dtype != TF_STRING) {
    print_error("signature '" SIGNATURE "' has no string output 'text'");
    return -1;
  }
  return resolve(graph, text, fetch);
}

static void dump_signatures(const tfc_signature_map *sigs) {
  for (size_t i = 0; i < sigs->n; i++) {
    const tfc_signature *s = &sigs->items[i];
    printf("signature %s method=%s\n", s->key, s->method_name);
    for (size_t j = 0; j < s->n_inputs; j++)
      printf("  input  %s %s %s\n", s->inputs[j].key, tfc_dtype_name(s->inputs[j].dtype),
             s->inputs[j].name);
    for (size_t j = 0; j < s->n_outputs; j++)
      printf("  output %s %s %s\n", s->outputs[j].key, tfc_dtype_name(s->outputs[j].dtype),
             s->outputs[j].name);
  }
}

/* ---- tensors ---------------------------------------------------------------------- */

static void free_inputs(TF_Tensor *t[N_INPUTS], int64_t batch) {
  if (t[IN_PROMPT]) {
    TF_TString *s = (TF_TString *)TF_TensorData(t[IN_PROMPT]);
    for (int64_t i = 0; i < batch; i++) TF_StringDealloc(&s[i]);
  }
  for (int k = 0; k < N_INPUTS; k++) {
    if (t[k]) TF_DeleteTensor(t[k]);
    t[k] = NULL;
  }
}

/* Builds the six [B] input tensors. The prompt strings are copied into TF_TStrings
 * (strings over 22 bytes live on the heap); free_inputs deallocates them before
 * deleting the tensor. (TF_DeleteTensor would also free them when it holds the only
 * reference to the buffer; the explicit TF_StringDealloc does not rely on that, and
 * deallocating twice is safe: TF_StringDealloc leaves an empty string behind.) */
static int make_inputs(const options *o, TF_Tensor *t[N_INPUTS]) {
  int64_t b = o->n_prompts;
  int64_t dims[1] = {b};
  for (int k = 0; k < N_INPUTS; k++) t[k] = NULL;
  t[IN_PROMPT] = TF_AllocateTensor(TF_STRING, dims, 1, (size_t)b * sizeof(TF_TString));
  if (!t[IN_PROMPT]) goto oom;
  TF_TString *s = (TF_TString *)TF_TensorData(t[IN_PROMPT]);
  for (int64_t i = 0; i < b; i++) {
    TF_StringInit(&s[i]);
    TF_StringCopy(&s[i], o->prompts[i], strlen(o->prompts[i]));
  }
  for (int k = IN_MAX_LENGTH; k < N_INPUTS; k++) {
    size_t es = TF_DataTypeSize(input_types[k]);
    t[k] = TF_AllocateTensor(input_types[k], dims, 1, (size_t)b * es);
    if (!t[k]) goto oom;
    void *d = TF_TensorData(t[k]);
    for (int64_t i = 0; i < b; i++) {
      switch (k) {
        case IN_MAX_LENGTH: ((int32_t *)d)[i] = o->max_length; break;
        case IN_TEMPERATURE: ((float *)d)[i] = o->temperature; break;
        case IN_TOP_K: ((int32_t *)d)[i] = o->top_k; break;
        case IN_TOP_P: ((float *)d)[i] = o->top_p; break;
        case IN_SEED: ((int64_t *)d)[i] = row_seed(o->seed, (uint64_t)i); break;
      }
    }
  }
  return 0;
oom:
  free_inputs(t, b);
  print_error("out of memory allocating input tensors");
  return -1;
}

/* MODEL as `tfchargen generate --model` reads it: a directory holding saved_model.pb(txt)
 * is one version; otherwise its numerically largest all-digit subdirectory (TF Serving's
 * layout) is. Writes the directory to load into `out`; with neither, MODEL itself, so
 * the loader's NOT_FOUND names it. Returns -1 (printed) if the path does not fit. */
static int resolve_model_dir(const char *model, char *out, size_t n) {
  char path[PATH_MAX];
  struct stat st;
  const char *files[] = {"saved_model.pb", "saved_model.pbtxt"};
  for (size_t f = 0; f < sizeof files / sizeof *files; f++) {
    snprintf(path, sizeof path, "%s/%s", model, files[f]);
    if (stat(path, &st) == 0) goto as_is;
  }
  DIR *d = opendir(model);
  if (!d) goto as_is;
  char best[256] = "";
  unsigned long long best_v = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    const char *name = e->d_name;
    size_t len = strlen(name);
    if (len == 0 || len > 18 || strspn(name, "0123456789") != len) continue; /* no overflow */
    unsigned long long v = strtoull(name, NULL, 10);
    snprintf(path, sizeof path, "%s/%s", model, name);
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    if (!best[0] || v > best_v) {
      best_v = v;
      snprintf(best, sizeof best, "%s", name);
    }
  }
  closedir(d);
  if (!best[0]) goto as_is;
  if ((size_t)snprintf(out, n, "%s/%s", model, best) >= n) goto too_long;
  return 0;
as_is:
  if ((size_t)snprintf(out, n, "%s", model) >= n) goto too_long;
  return 0;
too_long:
  print_error("model path too long: %s", model);
  return -1;
}

static int check_text(const TF_Tensor *t, int64_t batch) {
  if (!t || TF_TensorType(t) != TF_STRING || TF_NumDims(t) != 1 || TF_Dim(t, 0) != batch ||
      TF_TensorByteSize(t) < (size_t)batch * sizeof(TF_TString)) {
    print_error("output 'text' is not a string vector of %lld rows", (long long)batch);
    return -1;
  }
  return 0;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* One line on stderr: the first call apart (it warms up the graph), then the rest. */
static void print_timing(double load_ms, double *ms, long n) {
  double first = ms[0];
  double *rest = n > 1 ? ms + 1 : ms;
  long m = n > 1 ? n - 1 : 1;
  double sum = 0;
  for (long i = 0; i < m; i++) sum += rest[i];
  qsort(rest, (size_t)m, sizeof *rest, cmp_double);
  fprintf(stderr,
          PROG ": timing load_ms=%.3f calls=%ld first_ms=%.4f median_ms=%.4f mean_ms=%.4f"
               " min_ms=%.4f p90_ms=%.4f max_ms=%.4f\n",
          load_ms, n, first, rest[m / 2], sum / (double)m, rest[0],
          rest[(size_t)((double)(m - 1) * 0.9)], rest[m - 1]);
}

/* ---- --stream: `start`, then `continue` with each state (tfchargen/streaming.py) --- */

enum { OUT_TEXT, OUT_NUM_CHARS, OUT_ENDED, OUT_STATE, N_STREAM_OUTPUTS };
static const char *const stream_output_keys[N_STREAM_OUTPUTS] = {"text", "num_chars",
                                                                 "ended_with_eos", "state_bytes"};
static const TF_DataType stream_output_types[N_STREAM_OUTPUTS] = {TF_STRING, TF_INT32, TF_BOOL,
                                                                  TF_STRING};
/* `continue` takes the state where `start` and `generate` take the prompt. */
static const char *const continue_keys[N_INPUTS] = {"state_bytes", "max_length", "temperature",
                                                    "top_k",       "top_p",      "seed"};

/* Finds a stream signature's feeds (keys, in input_types' dtypes) and its four fetches. */
static int bind_stream(TF_Graph *graph, const tfc_signature_map *sigs, const char *name,
                       const char *const keys[N_INPUTS], TF_Output feeds[N_INPUTS],
                       TF_Output fetches[N_STREAM_OUTPUTS]) {
  const tfc_signature *sig = tfc_signature_find(sigs, name);
  if (!sig) {
    print_error("the SavedModel has no '%s' signature: --stream needs an export with start "
                "and continue", name);
    return -1;
  }
  if (sig->n_inputs != N_INPUTS) {
    print_error("signature '%s' has %zu inputs, expected %d", name, sig->n_inputs, N_INPUTS);
    return -1;
  }
  for (int k = 0; k < N_INPUTS; k++) {
    const tfc_tensor_info *ti = tfc_signature_input(sig, keys[k]);
    if (!ti || ti->dtype != (int)input_types[k]) {
      print_error("signature '%s' has no %s input '%s'", name, tfc_dtype_name((int)input_types[k]),
                  keys[k]);
      return -1;
    }
    if (resolve_in(graph, name, ti, &feeds[k]) != 0) return -1;
  }
  for (int k = 0; k < N_STREAM_OUTPUTS; k++) {
    const tfc_tensor_info *ti = tfc_signature_output(sig, stream_output_keys[k]);
    if (!ti || ti->dtype != (int)stream_output_types[k]) {
      print_error("signature '%s' has no %s output '%s'", name,
                  tfc_dtype_name((int)stream_output_types[k]), stream_output_keys[k]);
      return -1;
    }
    if (resolve_in(graph, name, ti, &fetches[k]) != 0) return -1;
  }
  return 0;
}

static void free_outputs(TF_Tensor *t[N_STREAM_OUTPUTS]) {
  for (int k = 0; k < N_STREAM_OUTPUTS; k++) {
    if (t[k]) TF_DeleteTensor(t[k]); /* their strings belong to the tensors */
    t[k] = NULL;
  }
}

static int check_stream_outputs(TF_Tensor *const t[N_STREAM_OUTPUTS]) {
  for (int k = 0; k < N_STREAM_OUTPUTS; k++) {
    size_t es = k == OUT_TEXT || k == OUT_STATE ? sizeof(TF_TString) : TF_DataTypeSize(stream_output_types[k]);
    if (!t[k] || TF_TensorType(t[k]) != stream_output_types[k] || TF_NumDims(t[k]) != 1 ||
        TF_Dim(t[k], 0) != 1 || TF_TensorByteSize(t[k]) < es) {
      print_error("output '%s' is not a vector of 1 row", stream_output_keys[k]);
      return -1;
    }
  }
  return 0;
}

/* The one prompt's chunks, each written and flushed as it arrives, then a newline. A row
 * is done at --max-length characters, at <eos>, or when a chunk it asked for came back
 * empty (contract.py MAX_STREAM_CHARS), as in streaming.chunks. */
static int run_stream(TF_Session *session, TF_Graph *graph, const tfc_signature_map *sigs,
                      const options *o, TF_Status *status) {
  TF_Output start_in[N_INPUTS], cont_in[N_INPUTS], start_out[N_STREAM_OUTPUTS],
      cont_out[N_STREAM_OUTPUTS];
  if (bind_stream(graph, sigs, "start", input_keys, start_in, start_out) != 0 ||
      bind_stream(graph, sigs, "continue", continue_keys, cont_in, cont_out) != 0)
    return -1;
  TF_Tensor *in[N_INPUTS] = {0}, *out[N_STREAM_OUTPUTS] = {0}, *next[N_STREAM_OUTPUTS] = {0};
  int rc = -1;
  if (make_inputs(o, in) != 0) return -1; /* one row: row_seed(--seed, 0), as generate's row 0 */
  int32_t *size = (int32_t *)TF_TensorData(in[IN_MAX_LENGTH]);
  long long left = o->max_length;
  *size = (int32_t)(left < o->chunk ? left : o->chunk); /* negative: the graph's error */
  TF_SessionRun(session, NULL, start_in, in, N_INPUTS, start_out, out, N_STREAM_OUTPUTS, NULL, 0,
                NULL, status);
  for (;;) {
    if (TF_GetCode(status) != TF_OK) {
      for (int k = 0; k < N_STREAM_OUTPUTS; k++) out[k] = NULL; /* not set on failure */
      fflush(stdout);
      print_status(status);
      goto done;
    }
    if (check_stream_outputs(out) != 0) goto done;
    const TF_TString *text = (const TF_TString *)TF_TensorData(out[OUT_TEXT]);
    fwrite(TF_StringGetDataPointer(text), 1, TF_StringGetSize(text), stdout);
    if (fflush(stdout) != 0) {
      print_error("writing output: %s", strerror(errno));
      goto done;
    }
    int32_t got = ((const int32_t *)TF_TensorData(out[OUT_NUM_CHARS]))[0];
    int ended = ((const unsigned char *)TF_TensorData(out[OUT_ENDED]))[0] != 0;
    left -= got;
    if (left <= 0 || ended || (*size > 0 && got == 0)) break;
    *size = (int32_t)(left < o->chunk ? left : o->chunk);
    TF_Tensor *feed[N_INPUTS] = {out[OUT_STATE], in[1], in[2], in[3], in[4], in[5]};
    TF_SessionRun(session, NULL, cont_in, feed, N_INPUTS, cont_out, next, N_STREAM_OUTPUTS, NULL, 0,
                  NULL, status);
    free_outputs(out);
    for (int k = 0; k < N_STREAM_OUTPUTS; k++) out[k] = next[k], next[k] = NULL;
  }
  fputc('\n', stdout);
  if (fflush(stdout) != 0) {
    print_error("writing output: %s", strerror(errno));
    goto done;
  }
  rc = 0;
done:
  free_outputs(out);
  free_inputs(in, 1);
  return rc;
}

/* ---- main ------------------------------------------------------------------------ */

int main(int argc, char **argv) {
  tfc_restore_stderr(); /* TensorFlow's load-time chatter went to /dev/null (quiet.c) */
  options o;
  int pa = parse_args(argc, argv, &o);
  if (pa != 0) return pa > 0 ? 0 : EXIT_USAGE;

  int rc = EXIT_ERR;
  TF_Status *status = TF_NewStatus();
  TF_Graph *graph = TF_NewGraph();
  TF_SessionOptions *sess_opts = TF_NewSessionOptions();
  TF_Buffer *meta = TF_NewBuffer();
  TF_Session *session = NULL;
  tfc_signature_map sigs = {0};
  TF_Tensor *inputs[N_INPUTS] = {0};
  TF_Tensor *text = NULL;
  double *times = NULL;
  char err[256];

  if (!status || !graph || !sess_opts || !meta) {
    print_error("out of memory");
    goto done;
  }
  char model_dir[PATH_MAX];
  if (resolve_model_dir(o.model_dir, model_dir, sizeof model_dir) != 0) goto done;
  const char *tags[] = {"serve"};
  double t0 = now_ms();
  session = TF_LoadSessionFromSavedModel(sess_opts, NULL, model_dir, tags, 1, graph, meta,
                                         status);
  double load_ms = now_ms() - t0;
  if (TF_GetCode(status) != TF_OK) {
    session = NULL;
    print_status(status);
    goto done;
  }
  if (tfc_signatures_parse(meta->data, meta->length, &sigs, err, sizeof err) != 0) {
    print_error("%s: %s", model_dir, err);
    goto done;
  }
  if (o.signature_dump) {
    dump_signatures(&sigs);
    if (o.n_prompts == 0) {
      rc = 0;
      goto done;
    }
  }

  if (o.stream) {
    rc = run_stream(session, graph, &sigs, &o, status) == 0 ? 0 : EXIT_ERR;
    goto done;
  }
  TF_Output feeds[N_INPUTS], fetch;
  if (bind_signature(graph, &sigs, feeds, &fetch) != 0) goto done;

  times = malloc((size_t)o.repeat * sizeof *times);
  if (!times) {
    print_error("out of memory");
    goto done;
  }
  int64_t batch = o.n_prompts;
  for (long r = 0; r < o.repeat; r++) {
    if (make_inputs(&o, inputs) != 0) goto done;
    double a = now_ms();
    TF_SessionRun(session, NULL, feeds, inputs, N_INPUTS, &fetch, &text, 1, NULL, 0, NULL,
                  status);
    times[r] = now_ms() - a;
    free_inputs(inputs, batch);
    if (TF_GetCode(status) != TF_OK) {
      text = NULL;
      print_status(status);
      goto done;
    }
    if (check_text(text, batch) != 0) goto done;
    if (r == o.repeat - 1) {
      const TF_TString *s = (const TF_TString *)TF_TensorData(text);
      for (int64_t i = 0; i < batch; i++) {
        fwrite(TF_StringGetDataPointer(&s[i]), 1, TF_StringGetSize(&s[i]), stdout);
        fputc('\n', stdout);
      }
    }
    TF_DeleteTensor(text); /* its strings belong to the tensor: no TF_StringDealloc */
    text = NULL;
  }
  if (fflush(stdout) != 0) {
    print_error("writing output: %s", strerror(errno));
    goto done;
  }
  if (o.timing) print_timing(load_ms, times, o.repeat);
  rc = 0;

done:
  free(times);
  if (text) TF_DeleteTensor(text);
  free_inputs(inputs, o.n_prompts);
  tfc_signatures_free(&sigs);
  if (session) {
    TF_Status *s2 = TF_NewStatus();
    TF_CloseSession(session, s2);
    TF_DeleteSession(session, s2);
    TF_DeleteStatus(s2);
  }
  if (meta) TF_DeleteBuffer(meta);
  if (sess_opts) TF_DeleteSessionOptions(sess_opts);
  if (graph) TF_DeleteGraph(graph);
  if (status) TF_DeleteStatus(status);
  return rc;
}
