/*
 * A hung disk for the tests (test/e2e/lvm-hung-disk.test.ts): a FUSE filesystem with one file, "disk",
 * whose reads and writes go to BACKING until FREEZE_PATH exists, and then wait, in the kernel for the
 * caller, until it is gone. A loop device over that file is a block device whose I/O stops as a disk's
 * does when it hangs: the reader sits in uninterruptible sleep (D state), SIGKILL does not end it, and
 * it goes on where it was once the file is thawed. No device-mapper on this host for dm-delay or a
 * suspended table; this is the kernel's own loop and FUSE code, with only the answer withheld.
 *
 * Usage: hung-file BACKING FREEZE_PATH MOUNTPOINT   (stays in the foreground; ends when unmounted)
 * When its stdin ends (the test that started it died) it answers again whatever FREEZE_PATH says, so a
 * crashed test cannot leave a disk hung for every lvm scan after it (the mount and the loop device stay
 * until removed). Its stdin must be a pipe held open by the test: from /dev/null it never freezes.
 */
#define FUSE_USE_VERSION 31
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int backing = -1;
static const char *freeze_path;
/* Set once stdin ends: the test that froze the disk is gone, and nothing may stay frozen after it. */
static volatile sig_atomic_t orphaned;

/* Every I/O waits while the freeze file exists: the answer is withheld, not refused. */
static void wait_thawed(void) {
  while (!orphaned && access(freeze_path, F_OK) == 0) usleep(10000);
}

static void *watch_stdin(void *arg) {
  (void)arg;
  char b[64];
  while (read(0, b, sizeof b) > 0) {}
  orphaned = 1;
  return NULL;
}

static int hf_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
  (void)fi;
  memset(st, 0, sizeof *st);
  if (strcmp(path, "/") == 0) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    return 0;
  }
  if (strcmp(path, "/disk") != 0) return -ENOENT;
  struct stat b;
  if (fstat(backing, &b) < 0) return -errno;
  st->st_mode = S_IFREG | 0600;
  st->st_nlink = 1;
  st->st_size = b.st_size;
  st->st_blocks = b.st_blocks;
  return 0;
}

static int hf_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi, enum fuse_readdir_flags flags) {
  (void)off; (void)fi; (void)flags;
  if (strcmp(path, "/") != 0) return -ENOENT;
  fill(buf, ".", NULL, 0, 0);
  fill(buf, "..", NULL, 0, 0);
  fill(buf, "disk", NULL, 0, 0);
  return 0;
}

static int hf_open(const char *path, struct fuse_file_info *fi) {
  if (strcmp(path, "/disk") != 0) return -ENOENT;
  /* No page cache of FUSE's own: every read and write reaches this process. */
  fi->direct_io = 1;
  return 0;
}

static int hf_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  (void)path; (void)fi;
  wait_thawed();
  ssize_t n = pread(backing, buf, size, off);
  return n < 0 ? -errno : (int)n;
}

static int hf_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  (void)path; (void)fi;
  wait_thawed();
  ssize_t n = pwrite(backing, buf, size, off);
  return n < 0 ? -errno : (int)n;
}

static int hf_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
  (void)path; (void)fi;
  wait_thawed();
  return (datasync ? fdatasync(backing) : fsync(backing)) < 0 ? -errno : 0;
}

static const struct fuse_operations ops = {
  .getattr = hf_getattr,
  .readdir = hf_readdir,
  .open = hf_open,
  .read = hf_read,
  .write = hf_write,
  .fsync = hf_fsync,
};

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s BACKING FREEZE_PATH MOUNTPOINT\n", argv[0]);
    return 2;
  }
  backing = open(argv[1], O_RDWR);
  if (backing < 0) {
    perror(argv[1]);
    return 1;
  }
  freeze_path = argv[2];
  pthread_t t;
  if (pthread_create(&t, NULL, watch_stdin, NULL) != 0) {
    fprintf(stderr, "hung-file: cannot watch stdin\n");
    return 1;
  }
  /* Foreground, multi-threaded: a withheld read holds one thread, others (getattr) still answer. */
  char *fargv[] = { argv[0], "-f", argv[3], NULL };
  return fuse_main(3, fargv, &ops, NULL);
}
