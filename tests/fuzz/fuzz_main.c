/* A main for the fuzz harnesses without libFuzzer: runs every file of the
 * directories (or files) given once, so the committed corpus, crash
 * regressions included, runs in every build (`meson test`, also under the
 * sanitizers) and not only where clang's libFuzzer is. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Run one file; 0 on success, -1 when it cannot be read. */
static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return -1;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *data = malloc(n ? n : 1);
    int ok = data && fread(data, 1, n, f) == n;
    fclose(f);
    if (ok) LLVMFuzzerTestOneInput(data, n);
    free(data);
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    long runs = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "%s: no %s\n", argv[0], argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (run_file(argv[i]) != 0) return 1;
            runs++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        if (!d) return 1;
        for (struct dirent *e; (e = readdir(d)) != NULL;) {
            if (e->d_name[0] == '.') continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
            if (run_file(path) != 0) {
                fprintf(stderr, "%s: cannot read %s\n", argv[0], path);
                closedir(d);
                return 1;
            }
            runs++;
        }
        closedir(d);
    }
    printf("%ld inputs run\n", runs);
    return runs > 0 ? 0 : 1;
}
