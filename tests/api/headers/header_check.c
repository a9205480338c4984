/* One public header compiled on its own as C11 under -pedantic -Werror.
 * XATTN_TEST_HEADER names the header; it is included first, so anything it
 * needs but does not include itself breaks the build, and twice, so a
 * missing include guard does too. */
#include XATTN_TEST_HEADER
#include XATTN_TEST_HEADER

#ifdef XATTN_ATTN_H
static size_t attn_types_size(void)
{
    xattn_attn_desc desc = {0};
    xattn_attn_args args = {0};
    (void)desc;
    (void)args;
    return sizeof desc + sizeof args + sizeof(xattn_plan *);
}
#else
static size_t attn_types_size(void) { return 1; }
#endif

int main(void)
{
    xattn_tensor t = {0};
    xattn_context_options opts = {0};
    (void)t;
    (void)opts;
    const char *s = xattn_status_string(XATTN_OK);
    return (s && s[0] && attn_types_size() > 0) ? 0 : 1;
}
