/*
 * The arm-emu device's instruction clock: a QEMU TCG plugin (qemu-user 7.2, plugin API version 1) that counts the
 * guest instructions the emulated process executes and, each time the guest asks, writes the count to a file.
 *
 * The guest asks by calling lseek() on the descriptor MARK_FD (which fails with EBADF: no side effect); the plugin
 * sees the system call first and writes the count, as 20 decimal digits, at the start of the file named by its
 * `out=PATH` argument. profiler/runner.py reads it around each timed sample, so a kernel's cost is counted in
 * executed ARM instructions: the same on an idle or a busy machine, unlike emulated wall time.
 *
 * Built by scripts/install-arm-emu.sh: gcc -shared -fPIC -O2 -o insn-clock.so qemu-insn-clock.c
 * Only the few entry points of QEMU's plugin API this file uses are declared below.
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))
#define MARK_FD (-4242)      /* the descriptor the guest seeks to ask for the count (profiler/runner.py) */
#define AARCH64_LSEEK 62     /* lseek's system call number on aarch64 Linux */
#define INLINE_ADD_U64 0     /* QEMU_PLUGIN_INLINE_ADD_U64 */

typedef uint64_t plugin_id;
struct qemu_plugin_tb;
typedef void (*translate_cb)(plugin_id id, struct qemu_plugin_tb *tb);
typedef void (*syscall_cb)(plugin_id id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2, uint64_t a3,
                           uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8);

void qemu_plugin_register_vcpu_tb_trans_cb(plugin_id id, translate_cb cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, int op, void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_syscall_cb(plugin_id id, syscall_cb cb);

EXPORT int qemu_plugin_version = 1;

static uint64_t executed; /* guest instructions so far, every thread's (the runner times on one) */
static int out = -1;

/* Each translated block adds its instruction count to `executed` every time it runs. */
static void on_translate(plugin_id id, struct qemu_plugin_tb *tb)
{
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, INLINE_ADD_U64, &executed, qemu_plugin_tb_n_insns(tb));
}

static void on_syscall(plugin_id id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2, uint64_t a3,
                       uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    char text[24];
    (void)id, (void)vcpu, (void)a2, (void)a3, (void)a4, (void)a5, (void)a6, (void)a7, (void)a8;
    if (num != AARCH64_LSEEK || (int32_t)a1 != MARK_FD)
        return;
    snprintf(text, sizeof text, "%020llu\n", (unsigned long long)executed);
    if (pwrite(out, text, 21, 0) != 21)
        perror("insn-clock: cannot write the count");
}

EXPORT int qemu_plugin_install(plugin_id id, const void *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++)
        if (strncmp(argv[i], "out=", 4) == 0)
            out = open(argv[i] + 4, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0) {
        fprintf(stderr, "insn-clock: needs out=FILE, a file it can write\n");
        return 1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    return 0;
}
