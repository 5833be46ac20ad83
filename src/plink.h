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

#endif
