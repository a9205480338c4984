/* A backend module file checked before dlopen (module_check.h). */
#include "module_check.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The ELF flavour this libxattn was built for; a module must match it. */
#if defined(__LP64__)
#  define BUILD_CLASS ELFCLASS64
#else
#  define BUILD_CLASS ELFCLASS32
#endif
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#  define BUILD_DATA ELFDATA2LSB
#else
#  define BUILD_DATA ELFDATA2MSB
#endif
#if defined(__x86_64__)
#  define BUILD_MACHINE EM_X86_64
#elif defined(__i386__)
#  define BUILD_MACHINE EM_386
#elif defined(__aarch64__)
#  define BUILD_MACHINE EM_AARCH64
#elif defined(__arm__)
#  define BUILD_MACHINE EM_ARM
#elif defined(__powerpc64__)
#  define BUILD_MACHINE EM_PPC64
#elif defined(__powerpc__)
#  define BUILD_MACHINE EM_PPC
#elif defined(__riscv)
#  define BUILD_MACHINE EM_RISCV
#elif defined(__s390__)
#  define BUILD_MACHINE EM_S390
#else
#  define BUILD_MACHINE EM_NONE /* unknown here: the machine is not checked */
#endif

enum {
    /* Program headers read at once; glibc's loader refuses far fewer. */
    MAX_PROGRAM_HEADERS = 1024,
};

static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "not a regular file";
}

/* Read exactly n bytes at offset; 0 on success. */
static int read_at(int fd, void *buf, size_t n, uint64_t offset)
{
    char *p = buf;
    while (n) {
        ssize_t got = pread(fd, p, n, (off_t)offset);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return -1;
        p += got;
        n -= (size_t)got;
        offset += (uint64_t)got;
    }
    return 0;
}

/* [offset, offset + count·entry) inside size bytes, without overflow. */
static int table_fits(uint64_t offset, uint64_t count, uint64_t entry, uint64_t size)
{
    uint64_t bytes;
    if (__builtin_mul_overflow(count, entry, &bytes)) return 0;
    return offset <= size && bytes <= size - offset;
}

/* What is wrong with a header table that table_fits refused, in buf. */
static const char *table_past_end(char *buf, size_t buf_size, const char *what, unsigned count,
                                  uint64_t offset, uint64_t size)
{
    snprintf(buf, buf_size,
             "the %s headers (%u from byte %llu) end past the end of the file, "
             "%llu bytes (truncated?)",
             what, count, (unsigned long long)offset, (unsigned long long)size);
    return buf;
}

/* The ELF checks; NULL when the file passes, else what is wrong (in buf or
 * a static string). */
static const char *elf_problem(int fd, uint64_t size, char *buf, size_t buf_size)
{
    ElfW(Ehdr) eh;
    if (size < sizeof eh || read_at(fd, &eh, sizeof eh, 0) != 0) {
        if (size >= SELFMAG && read_at(fd, &eh, SELFMAG, 0) == 0 &&
            memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0) {
            snprintf(buf, buf_size, "the file has %llu bytes, shorter than an ELF header",
                     (unsigned long long)size);
            return buf;
        }
        return "no ELF magic number";
    }
    if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) return "no ELF magic number";
    if (eh.e_ident[EI_CLASS] != BUILD_CLASS)
        return BUILD_CLASS == ELFCLASS64 ? "not a 64-bit ELF file" : "not a 32-bit ELF file";
    if (eh.e_ident[EI_DATA] != BUILD_DATA) return "byte order differs from this libxattn's";
    if (eh.e_ident[EI_VERSION] != EV_CURRENT || eh.e_version != EV_CURRENT)
        return "unknown ELF version";
    if (eh.e_type != ET_DYN) {
        snprintf(buf, buf_size, "ELF type %u, not a shared object (%u)", (unsigned)eh.e_type,
                 (unsigned)ET_DYN);
        return buf;
    }
    if (BUILD_MACHINE != EM_NONE && eh.e_machine != BUILD_MACHINE) {
        snprintf(buf, buf_size, "built for ELF machine %u, this libxattn for %u",
                 (unsigned)eh.e_machine, (unsigned)BUILD_MACHINE);
        return buf;
    }
    if (eh.e_phentsize != sizeof(ElfW(Phdr)) || eh.e_phnum == 0 ||
        eh.e_phnum > MAX_PROGRAM_HEADERS) {
        snprintf(buf, buf_size, "%u program headers of %u bytes", (unsigned)eh.e_phnum,
                 (unsigned)eh.e_phentsize);
        return buf;
    }
    if (!table_fits(eh.e_phoff, eh.e_phnum, eh.e_phentsize, size))
        return table_past_end(buf, buf_size, "program", eh.e_phnum, eh.e_phoff, size);
    /* Section headers are not needed to load, but a table that runs past
     * the end means the file was cut short. */
    if (eh.e_shoff != 0 &&
        (eh.e_shentsize != sizeof(ElfW(Shdr)) ||
         !table_fits(eh.e_shoff, eh.e_shnum ? eh.e_shnum : 1, eh.e_shentsize, size)))
        return table_past_end(buf, buf_size, "section", eh.e_shnum, eh.e_shoff, size);
    int loads = 0, dynamic = 0;
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        ElfW(Phdr) ph;
        if (read_at(fd, &ph, sizeof ph, eh.e_phoff + (uint64_t)i * sizeof ph) != 0)
            return "cannot read the program headers";
        if (ph.p_type != PT_LOAD && ph.p_type != PT_DYNAMIC) continue;
        loads += ph.p_type == PT_LOAD;
        dynamic += ph.p_type == PT_DYNAMIC;
        /* dlopen maps these bytes; past the end of the file they fault. */
        if (!table_fits(ph.p_offset, 1, ph.p_filesz, size)) {
            snprintf(buf, buf_size,
                     "segment %u (bytes %llu to %llu) ends past the end of the file, %llu "
                     "bytes (truncated?)",
                     i, (unsigned long long)ph.p_offset,
                     (unsigned long long)ph.p_offset + (unsigned long long)ph.p_filesz,
                     (unsigned long long)size);
            return buf;
        }
        if (ph.p_type == PT_LOAD && ph.p_filesz > ph.p_memsz) {
            snprintf(buf, buf_size, "segment %u has more bytes in the file than in memory", i);
            return buf;
        }
    }
    if (!loads) return "no loadable segment";
    if (!dynamic) return "no dynamic section";
    return NULL;
}

int xattn_module_file_check(const char *path, char *reason, size_t reason_size)
{
    /* Non-blocking: opening a FIFO for reading would wait for a writer. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        snprintf(reason, reason_size, "module %s cannot be opened: %s", path, strerror(err));
        return -1;
    }
    struct stat st;
    int rc = -1;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        snprintf(reason, reason_size, "module %s cannot be examined: %s", path, strerror(err));
    } else if (!S_ISREG(st.st_mode)) {
        snprintf(reason, reason_size, "module %s is not a regular file (%s)", path,
                 file_kind(st.st_mode));
    } else {
        char detail[256];
        const char *why = elf_problem(fd, (uint64_t)st.st_size, detail, sizeof detail);
        if (why)
            snprintf(reason, reason_size, "module %s is not a valid ELF shared object: %s", path,
                     why);
        else
            rc = 0;
    }
    close(fd);
    return rc;
}
