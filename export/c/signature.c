/* signature.c: a protobuf wire-format walk over a MetaGraphDef's signature_def map.
 * See signature.h for the fields it reads. */
#include "signature.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const uint8_t *p;
  const uint8_t *end;
} reader;

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

static int read_varint(reader *r, uint64_t *v) {
  uint64_t x = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (r->p >= r->end) return -1;
    uint8_t b = *r->p++;
    x |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = x;
      return 0;
    }
  }
  return -1; /* more than 10 bytes */
}

/* Reads a tag; field number and wire type out. */
static int read_tag(reader *r, uint32_t *field, int *wire) {
  uint64_t t;
  if (read_varint(r, &t) != 0) return -1;
  *field = (uint32_t)(t >> 3);
  *wire = (int)(t & 7);
  return *field == 0 ? -1 : 0;
}

/* Reads a length-delimited payload as a sub-reader. */
static int read_len(reader *r, reader *sub) {
  uint64_t n;
  if (read_varint(r, &n) != 0 || n > (uint64_t)(r->end - r->p)) return -1;
  sub->p = r->p;
  sub->end = r->p + n;
  r->p += n;
  return 0;
}

static int skip_group(reader *r, uint32_t field, int depth);

static int skip_field(reader *r, uint32_t field, int wire, int depth) {
  uint64_t v;
  reader sub;
  switch (wire) {
    case WT_VARINT: return read_varint(r, &v);
    case WT_I64:
      if (r->end - r->p < 8) return -1;
      r->p += 8;
      return 0;
    case WT_LEN: return read_len(r, &sub);
    case WT_I32:
      if (r->end - r->p < 4) return -1;
      r->p += 4;
      return 0;
    case WT_SGROUP: return skip_group(r, field, depth + 1);
    default: return -1; /* a stray end-group or an undefined wire type */
  }
}

static int skip_group(reader *r, uint32_t field, int depth) {
  if (depth > 64) return -1;
  while (r->p < r->end) {
    uint32_t f;
    int w;
    if (read_tag(r, &f, &w) != 0) return -1;
    if (w == WT_EGROUP) return f == field ? 0 : -1;
    if (skip_field(r, f, w, depth) != 0) return -1;
  }
  return -1;
}

static char *dup_bytes(const reader *s) {
  size_t n = (size_t)(s->end - s->p);
  char *c = malloc(n + 1);
  if (!c) return NULL;
  if (n) memcpy(c, s->p, n);
  c[n] = '\0';
  return c;
}

static void set_err(char *err, size_t errlen, const char *msg) {
  if (err && errlen) snprintf(err, errlen, "%s", msg);
}

#define BAD_PROTO "malformed MetaGraphDef protobuf"

/* TensorInfo message -> name, dtype. */
static int parse_tensor_info(reader r, tfc_tensor_info *ti, char *err, size_t errlen) {
  while (r.p < r.end) {
    uint32_t f;
    int w;
    if (read_tag(&r, &f, &w) != 0) goto bad;
    if (f == 1 && w == WT_LEN) {
      reader s;
      if (read_len(&r, &s) != 0) goto bad;
      free(ti->name);
      if (!(ti->name = dup_bytes(&s))) goto oom;
    } else if (f == 2 && w == WT_VARINT) {
      uint64_t v;
      if (read_varint(&r, &v) != 0) goto bad;
      ti->dtype = (int)v;
    } else if (skip_field(&r, f, w, 0) != 0) {
      goto bad;
    }
  }
  return 0;
bad:
  set_err(err, errlen, BAD_PROTO " (TensorInfo)");
  return -1;
oom:
  set_err(err, errlen, "out of memory");
  return -1;
}

/* Generic map entry: key (field 1, string) and the raw value (field 2, message). */
static int parse_map_entry(reader r, char **key, reader *value) {
  value->p = value->end = NULL;
  *key = NULL;
  while (r.p < r.end) {
    uint32_t f;
    int w;
    if (read_tag(&r, &f, &w) != 0) goto bad;
    if (f == 1 && w == WT_LEN) {
      reader s;
      if (read_len(&r, &s) != 0) goto bad;
      free(*key);
      if (!(*key = dup_bytes(&s))) goto bad;
    } else if (f == 2 && w == WT_LEN) {
      if (read_len(&r, value) != 0) goto bad;
    } else if (skip_field(&r, f, w, 0) != 0) {
      goto bad;
    }
  }
  if (!*key && !(*key = calloc(1, 1))) return -1; /* absent key = "" */
  return 0;
bad:
  free(*key);
  *key = NULL;
  return -1;
}

static void free_tensor_infos(tfc_tensor_info *a, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(a[i].key);
    free(a[i].name);
  }
  free(a);
}

/* Adds (or replaces) entry `key` in a TensorInfo array; takes ownership of key. */
static int add_tensor_info(tfc_tensor_info **a, size_t *n, char *key, reader value, char *err,
                           size_t errlen) {
  tfc_tensor_info ti = {key, NULL, 0};
  if (value.p && parse_tensor_info(value, &ti, err, errlen) != 0) {
    free(ti.key);
    free(ti.name);
    return -1;
  }
  if (!ti.name && !(ti.name = calloc(1, 1))) goto oom;
  for (size_t i = 0; i < *n; i++) {
    if (strcmp((*a)[i].key, key) == 0) {
      free((*a)[i].key);
      free((*a)[i].name);
      (*a)[i] = ti;
      return 0;
    }
  }
  tfc_tensor_info *grown = realloc(*a, (*n + 1) * sizeof **a);
  if (!grown) goto oom;
  *a = grown;
  (*a)[(*n)++] = ti;
  return 0;
oom:
  free(ti.key);
  free(ti.name);
  set_err(err, errlen, "out of memory");
  return -1;
}

static void free_signature(tfc_signature *s) {
  free(s->key);
  free(s->method_name);
  free_tensor_infos(s->inputs, s->n_inputs);
  free_tensor_infos(s->outputs, s->n_outputs);
  memset(s, 0, sizeof *s);
}

/* SignatureDef message. */
static int parse_signature(reader r, tfc_signature *sig, char *err, size_t errlen) {
  while (r.p < r.end) {
    uint32_t f;
    int w;
    if (read_tag(&r, &f, &w) != 0) goto bad;
    if ((f == 1 || f == 2) && w == WT_LEN) {
      reader entry, value;
      char *key;
      if (read_len(&r, &entry) != 0 || parse_map_entry(entry, &key, &value) != 0) goto bad;
      if (f == 1 ? add_tensor_info(&sig->inputs, &sig->n_inputs, key, value, err, errlen)
                 : add_tensor_info(&sig->outputs, &sig->n_outputs, key, value, err, errlen))
        return -1;
    } else if (f == 3 && w == WT_LEN) {
      reader s;
      if (read_len(&r, &s) != 0) goto bad;
      free(sig->method_name);
      if (!(sig->method_name = dup_bytes(&s))) {
        set_err(err, errlen, "out of memory");
        return -1;
      }
    } else if (skip_field(&r, f, w, 0) != 0) {
      goto bad;
    }
  }
  return 0;
bad:
  set_err(err, errlen, BAD_PROTO " (SignatureDef)");
  return -1;
}

static int cmp_info(const void *a, const void *b) {
  return strcmp(((const tfc_tensor_info *)a)->key, ((const tfc_tensor_info *)b)->key);
}

static int cmp_sig(const void *a, const void *b) {
  return strcmp(((const tfc_signature *)a)->key, ((const tfc_signature *)b)->key);
}

/* Map order in the bytes is whatever the writer's hash map gave: sort for stable output. */
static void sort_map(tfc_signature_map *m) {
  for (size_t i = 0; i < m->n; i++) {
    tfc_signature *s = &m->items[i];
    if (s->n_inputs > 1) qsort(s->inputs, s->n_inputs, sizeof *s->inputs, cmp_info);
    if (s->n_outputs > 1) qsort(s->outputs, s->n_outputs, sizeof *s->outputs, cmp_info);
  }
  if (m->n > 1) qsort(m->items, m->n, sizeof *m->items, cmp_sig);
}

int tfc_signatures_parse(const void *data, size_t len, tfc_signature_map *out, char *err,
                         size_t errlen) {
  reader r = {(const uint8_t *)data, (const uint8_t *)data + len};
  out->items = NULL;
  out->n = 0;
  if (err && errlen) err[0] = '\0';
  if (!data && len) {
    set_err(err, errlen, "no MetaGraphDef bytes");
    return -1;
  }
  while (r.p < r.end) {
    uint32_t f;
    int w;
    if (read_tag(&r, &f, &w) != 0) goto bad;
    if (f != 5 || w != WT_LEN) {
      if (skip_field(&r, f, w, 0) != 0) goto bad;
      continue;
    }
    reader entry, value;
    tfc_signature sig = {0};
    if (read_len(&r, &entry) != 0 || parse_map_entry(entry, &sig.key, &value) != 0) goto bad;
    if (value.p && parse_signature(value, &sig, err, errlen) != 0) {
      free_signature(&sig);
      goto fail;
    }
    if (!sig.method_name && !(sig.method_name = calloc(1, 1))) {
      free_signature(&sig);
      set_err(err, errlen, "out of memory");
      goto fail;
    }
    size_t i;
    for (i = 0; i < out->n && strcmp(out->items[i].key, sig.key) != 0; i++) {
    }
    if (i < out->n) {
      free_signature(&out->items[i]);
      out->items[i] = sig;
      continue;
    }
    tfc_signature *grown = realloc(out->items, (out->n + 1) * sizeof *grown);
    if (!grown) {
      free_signature(&sig);
      set_err(err, errlen, "out of memory");
      goto fail;
    }
    out->items = grown;
    out->items[out->n++] = sig;
  }
  sort_map(out);
  return 0;
bad:
  set_err(err, errlen, BAD_PROTO " (MetaGraphDef)");
fail:
  tfc_signatures_free(out);
  return -1;
}

void tfc_signatures_free(tfc_signature_map *m) {
  if (!m) return;
  for (size_t i = 0; i < m->n; i++) free_signature(&m->items[i]);
  free(m->items);
  m->items = NULL;
  m->n = 0;
}

const tfc_signature *tfc_signature_find(const tfc_signature_map *m, const char *key) {
  for (size_t i = 0; i < m->n; i++)
    if (strcmp(m->items[i].key, key) == 0) return &m->items[i];
  return NULL;
}

static const tfc_tensor_info *find_info(const tfc_tensor_info *a, size_t n, const char *key) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(a[i].key, key) == 0) return &a[i];
  return NULL;
}

const tfc_tensor_info *tfc_signature_input(const tfc_signature *s, const char *key) {
  return find_info(s->inputs, s->n_inputs, key);
}

const tfc_tensor_info *tfc_signature_output(const tfc_signature *s, const char *key) {
  return find_info(s->outputs, s->n_outputs, key);
}

int tfc_tensor_name_split(const char *name, char *op, size_t op_size, int *index) {
  const char *colon = strrchr(name, ':');
  size_t n = colon ? (size_t)(colon - name) : strlen(name);
  long idx = 0;
  if (colon) {
    char *end;
    if (colon[1] < '0' || colon[1] > '9') return -1;
    idx = strtol(colon + 1, &end, 10);
    if (*end != '\0' || idx > 1000000) return -1;
  }
  if (n == 0 || n >= op_size) return -1;
  memcpy(op, name, n);
  op[n] = '\0';
  *index = (int)idx;
  return 0;
}

const char *tfc_dtype_name(int dtype) {
  static char buf[24];
  switch (dtype) {
    case 0: return "DT_INVALID";
    case 1: return "DT_FLOAT";
    case 2: return "DT_DOUBLE";
    case 3: return "DT_INT32";
    case 4: return "DT_UINT8";
    case 5: return "DT_INT16";
    case 6: return "DT_INT8";
    case 7: return "DT_STRING";
    case 9: return "DT_INT64";
    case 10: return "DT_BOOL";
    case 14: return "DT_BFLOAT16";
    case 19: return "DT_HALF";
    case 20: return "DT_RESOURCE";
    case 21: return "DT_VARIANT";
    default: snprintf(buf, sizeof buf, "DT_%d", dtype); return buf;
  }
}
