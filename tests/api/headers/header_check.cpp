/* One public header compiled on its own as C++11 under -pedantic -Werror:
 * the extern "C" block and every type must be valid C++ too. */
#include XATTN_TEST_HEADER
#include XATTN_TEST_HEADER

#ifdef XATTN_ATTN_H
static size_t attn_types_size()
{
    xattn_attn_desc desc = xattn_attn_desc();
    xattn_attn_args args = xattn_attn_args();
    (void)desc;
    (void)args;
    return sizeof desc + sizeof args + sizeof(xattn_plan *);
}
#else
static size_t attn_types_size() { return 1; }
#endif

int main()
{
    xattn_tensor t = xattn_tensor();
    xattn_context_options opts = xattn_context_options();
    (void)t;
    (void)opts;
    xattn_status (*create)(xattn_context **) = &xattn_context_create;
    const char *s = xattn_status_string(XATTN_OK);
    return (create && s && s[0] && attn_types_size() > 0) ? 0 : 1;
}
