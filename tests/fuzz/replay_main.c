/*
 * replay_main: the main() of a harness built without libFuzzer.
 *
 * `fuzz_<name> PATH...` runs LLVMFuzzerTestOneInput once over every regular
 * file of each PATH (a directory, in name order, not recursive) or over PATH
 * itself (a file: how a crash artifact is replayed under gdb or valgrind).
 * This is how ctest runs every harness over its committed seed corpus on
 * every build, gcc and ASan/UBSan included: the harness's invariants abort
 * on a broken input, so a regression fails the test.
 *
 * Each input sits in a malloc'd block of exactly its size, as libFuzzer
 * hands it over, so that ASan sees a read one byte past it. Exit status 1
 * when a PATH cannot be read or no input ran at all (an empty corpus would
 * make a test that tests nothing).
 */
#include "fuzz.h"

#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

/* Run the harness over one file. 0, or -1 when it cannot be read. */
static int s_run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *data;
    long size;
    if (f == NULL) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "replay: %s: cannot size it\n", path);
        fclose(f);
        return -1;
    }
    data = malloc(size ? (size_t)size : 1);        /* never NULL for an empty input */
    if (data == NULL || fread(data, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "replay: %s: cannot read it\n", path);
        free(data);
        fclose(f);
        return -1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(data, (size_t)size);
    free(data);
    return 0;
}

static int s_by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Run every regular file of `dir`, in name order so that a replay is the
 * same run on every machine. Returns the inputs run, or -1. */
static long s_run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0;
    long ran = 0;
    if (d == NULL) {
        fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')                   /* ., .., hidden files */
            continue;
        if (n == cap) {
            char **grown = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof *names);
            if (grown == NULL)
                abort();
            names = grown;
        }
        if ((names[n++] = strdup(e->d_name)) == NULL)
            abort();
    }
    closedir(d);
    qsort(names, n, sizeof *names, s_by_name);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(dir) + strlen(names[i]) + 2;
        char *path = malloc(len);
        struct stat st;
        if (path == NULL)
            abort();
        snprintf(path, len, "%s/%s", dir, names[i]);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (s_run_file(path) != 0)
                ran = -1;
            else if (ran >= 0)
                ran++;
        }
        free(path);
        free(names[i]);
    }
    free(names);
    return ran;
}

int main(int argc, char **argv)
{
    long total = 0;
    int status = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        struct stat st;
        long ran;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            status = 1;
            continue;
        }
        ran = S_ISDIR(st.st_mode) ? s_run_dir(argv[i]) : s_run_file(argv[i]) == 0 ? 1 : -1;
        if (ran < 0)
            status = 1;
        else
            total += ran;
    }
    printf("replay: %ld inputs\n", total);
    if (total == 0)
        status = 1;
    return status;
}
