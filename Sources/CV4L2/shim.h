// libv4l2 (Debian: libv4l-dev) for V4L2 cameras. Swift cannot call the
// variadic v4l2_ioctl nor read the _IOWR request macros, so they are wrapped here.
#include <fcntl.h>
#include <linux/videodev2.h>
#include <libv4l2.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

static inline int loupe_v4l2_ioctl(int fd, unsigned long request, void *argument) {
    return v4l2_ioctl(fd, request, argument);
}

static inline unsigned long loupe_VIDIOC_QUERYCAP(void) { return VIDIOC_QUERYCAP; }
static inline unsigned long loupe_VIDIOC_ENUM_FMT(void) { return VIDIOC_ENUM_FMT; }
static inline unsigned long loupe_VIDIOC_S_FMT(void) { return VIDIOC_S_FMT; }
static inline unsigned long loupe_VIDIOC_S_PARM(void) { return VIDIOC_S_PARM; }
static inline unsigned long loupe_VIDIOC_REQBUFS(void) { return VIDIOC_REQBUFS; }
static inline unsigned long loupe_VIDIOC_QUERYBUF(void) { return VIDIOC_QUERYBUF; }
static inline unsigned long loupe_VIDIOC_QBUF(void) { return VIDIOC_QBUF; }
static inline unsigned long loupe_VIDIOC_DQBUF(void) { return VIDIOC_DQBUF; }
static inline unsigned long loupe_VIDIOC_STREAMON(void) { return VIDIOC_STREAMON; }
static inline unsigned long loupe_VIDIOC_STREAMOFF(void) { return VIDIOC_STREAMOFF; }
static inline unsigned long loupe_VIDIOC_QUERYCTRL(void) { return VIDIOC_QUERYCTRL; }
static inline unsigned long loupe_VIDIOC_S_CTRL(void) { return VIDIOC_S_CTRL; }

static inline int loupe_v4l2_open(const char *path) { return v4l2_open(path, O_RDWR | O_NONBLOCK, 0); }
static inline void *loupe_v4l2_mmap(int fd, size_t length, long offset) {
    return v4l2_mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
}
static inline int loupe_map_failed(void *address) { return address == MAP_FAILED; }
