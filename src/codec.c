/* codec.c - placeholder until its part lands. */
#include "plink.h"
void plink_codec_open(lua_State *L) { (void)L; }
