/* plink.h - what the parts of portone.link.core share.
 *
 * Each part adds its functions to the module table that is at the top of the
 * stack when luaopen_portone_link_core calls its *_open function:
 *   codec.c       validate, encode                 (request rules + JSON)
 *   http_easy.c   http_new                         (blocking libcurl handle)
 *   http_multi.c  multi_new                        (async libcurl multi)
 *   http_tls.c    share_new, ca_loads              (CA store, TLS sessions)
 *   answer.c      usual_answer                     (a create's usual answer)
 */
#ifndef PLINK_H
#define PLINK_H

#include "compat.h"

#define PLINK_VERSION "0.1.0"

void plink_codec_open(lua_State *L);
void plink_http_easy_open(lua_State *L);
void plink_http_multi_open(lua_State *L);
void plink_answer_open(lua_State *L);
/* The fused create (h:encode_create, http_easy.c) sends the body from the
 * codec's buffers (codec.c). PLINK_CODEC_HELD names, in the registry, the
 * walk of encode that leaves the body there: f(req, now) --> buffers
 * (a userdata) | false, list. The body is read with plink_codec_body and
 * the buffers let go with plink_codec_release (idx: where the userdata
 * is); a raise in between leaves them busy until a later walk finds no
 * frame of plink_http_encode_create, or of the bound create that runs it
 * in its own frame (h:bind_create), holding them. */
#define PLINK_CODEC_HELD "portone.link.codec_encode_held"
const char *plink_codec_body(lua_State *L, int idx, size_t *len);
void plink_codec_release(lua_State *L, int idx);
int plink_http_encode_create(lua_State *L);
int plink_http_bound_create(lua_State *L);
/* The usual create answer, read in place (answer.c): the URL's pieces in the
 * body (esc: a slash was written "\/", so the URL is rebuilt decoded). */
typedef struct {
    const char *url, *colon, *host, *host_end, *id, *id_end;
    int esc;
} plink_answer;
/* 1 when the len bytes at s (NULL: none) are the usual answer. */
int plink_answer_parse(const char *s, size_t len, plink_answer *a);
/* Pushes url and id (allocates: may raise). */
void plink_answer_push(lua_State *L, const plink_answer *a);

#endif
