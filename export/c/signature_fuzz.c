/* signature_fuzz: robustness check of the signature reader (built with ASan/UBSan by
 * `make signature_fuzz`; run by tests/test_native_clients.py).
 *
 *   signature_fuzz META_GRAPH_DEF_FILE N SEED
 *
 * Parses the file, then N corrupted copies of its signature_def entries (bytes
 * overwritten, bit flips, long varints, truncations), each in a buffer of exactly its size
 * so any over-read trips AddressSanitizer. Prints "original=ok signatures=S parsed=P rejected=R";
 * exit 0 unless the original does not parse. Crashes and leaks are the sanitizers'. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "signature.h"

static uint64_t rng;
static uint64_t next(void) { /* xorshift64* */
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * 2685821657736338717ull;
}
static size_t below(size_t n) { return n ? (size_t)(next() % n) : 0; }

/* Copies the top-level signature_def (field 5) entries of a MetaGraphDef into out (a
 * smaller MetaGraphDef with just those); returns its length. The graph itself (megabytes)
 * only costs copying time in the mutation loop. */
static size_t signature_entries(const uint8_t *d, size_t n, uint8_t *out) {
  size_t p = 0, o = 0;
  while (p < n) {
    size_t start = p;
    uint64_t tag = 0, len = 0;
    for (int shift = 0; p < n; shift += 7) {
      tag |= (uint64_t)(d[p] & 0x7f) << shift;
      if (!(d[p++] & 0x80)) break;
    }
    if ((tag & 7) != 2) break; /* the top level of a MetaGraphDef is all messages */
    for (int shift = 0; p < n; shift += 7) {
      len |= (uint64_t)(d[p] & 0x7f) << shift;
      if (!(d[p++] & 0x80)) break;
    }
    if (len > n - p) break;
    p += len;
    if ((tag >> 3) == 5) {
      memcpy(out + o, d + start, p - start);
      o += p - start;
    }
  }
  return o;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: signature_fuzz META_GRAPH_DEF_FILE N SEED\n");
    return 2;
  }
  FILE *f = fopen(argv[1], "rb");
  if (!f) {
    perror(argv[1]);
    return 2;
  }
  fseek(f, 0, SEEK_END);
  size_t n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *orig = malloc(n ? n : 1);
  if (!orig || fread(orig, 1, n, f) != n) {
    fprintf(stderr, "cannot read %s\n", argv[1]);
    return 2;
  }
  fclose(f);
  long iters = atol(argv[2]);
  rng = (uint64_t)atoll(argv[3]) * 0x9E3779B97F4A7C15ull + 1;

  char err[256];
  tfc_signature_map m;
  if (tfc_signatures_parse(orig, n, &m, err, sizeof err) != 0) {
    printf("original=error:%s\n", err);
    return 1;
  }
  size_t nsig = m.n;
  tfc_signatures_free(&m);
  uint8_t *sigs = malloc(n ? n : 1);
  size_t ns = signature_entries(orig, n, sigs);
  if (tfc_signatures_parse(sigs, ns, &m, err, sizeof err) != 0 || m.n != nsig) {
    printf("original=error:signature entries alone do not parse\n");
    return 1;
  }
  tfc_signatures_free(&m);

  long parsed = 0, rejected = 0;
  for (long it = 0; it < iters; it++) {
    size_t len = ns;
    int mode = (int)below(4);
    if (mode == 3) len = below(ns + 1); /* truncate */
    uint8_t *buf = malloc(len ? len : 1);
    memcpy(buf, sigs, len);
    if (mode != 3) {
      int k = 1 + (int)below(8);
      for (int j = 0; j < k && len; j++) {
        size_t pos = below(len);
        if (mode == 0)
          buf[pos] = (uint8_t)next();
        else if (mode == 1)
          buf[pos] ^= (uint8_t)(1u << below(8));
        else
          buf[pos] = (uint8_t)(below(2) ? 0xff : 0x80); /* long varints */
      }
    }
    if (tfc_signatures_parse(buf, len, &m, err, sizeof err) == 0) {
      parsed++;
      for (size_t i = 0; i < m.n; i++) { /* touch everything the reader returned */
        const tfc_signature *s = &m.items[i];
        volatile size_t sink = strlen(s->key) + strlen(s->method_name);
        for (size_t j = 0; j < s->n_inputs; j++) sink += strlen(s->inputs[j].name);
        for (size_t j = 0; j < s->n_outputs; j++) sink += strlen(s->outputs[j].name);
        (void)sink;
      }
      tfc_signatures_free(&m);
    } else {
      if (m.n != 0 || m.items != NULL || err[0] == '\0') {
        printf("error path left a non-empty map or no message\n");
        return 1;
      }
      rejected++;
    }
    free(buf);
  }
  free(orig);
  free(sigs);
  printf("original=ok signatures=%zu parsed=%ld rejected=%ld\n", nsig, parsed, rejected);
  return 0;
}
