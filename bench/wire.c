/*  bench/wire.c — bench_load's own ZMTP 3.0 client connection (wire.h).

    The spec is RFC 23 (ZMTP 3.0) and RFC 37 (ZMTP 3.1, for PING/PONG):
    a 64-byte greeting each way, one READY command each way (NULL
    mechanism), then frames: a flags byte (MORE 1, LONG 2, COMMAND 4) and a
    size, one byte or eight in network order.
*/

#include "wire.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WIRE_MORE 0x01
#define WIRE_LONG 0x02
#define WIRE_COMMAND 0x04
#define WIRE_GREETING_SIZE 64
#define WIRE_COPY_MAX 256            /* frames up to this size are copied when queued */
#define WIRE_MESSAGE_MAX (64u << 20) /* a larger message from the server is malformed */
#define WIRE_MESSAGE_FRAMES 64       /* and so is one of more frames */
#define WIRE_READ_ROOM (256u << 10)  /* free bytes offered to each read */
#define WIRE_IOV_MAX 64              /* iovecs per writev */

/* A run of queued bytes: copied into `out` at `off`, or `ext` (not copied). */
typedef struct {
  size_t off;
  const unsigned char *ext;
  size_t len;
} wire_chunk_t;

struct wire {
  int fd;
  unsigned char *out;                /* copied bytes of the queued chunks */
  size_t out_len, out_cap;
  wire_chunk_t *chunks;              /* queued, in order; [head] partly sent */
  size_t chunk_count, chunk_cap, head, head_sent;
  unsigned char *in;                 /* bytes read; parsed up to in_off */
  size_t in_len, in_off, in_cap;
  size_t in_want;                    /* bytes the message at in_off needs, when known */
};

/* ---- output ------------------------------------------------------------ */

static int s_reserve(void **buffer, size_t *cap, size_t need, size_t item) {
  if (need <= *cap)
    return 0;
  size_t grown = *cap ? *cap : 64;
  while (grown < need)
    grown *= 2;
  void *bigger = realloc(*buffer, grown * item);
  if (!bigger)
    return -1;
  *buffer = bigger;
  *cap = grown;
  return 0;
}

static int s_new_chunk(wire_t *w, size_t off, const unsigned char *ext, size_t len) {
  if (s_reserve((void **)&w->chunks, &w->chunk_cap, w->chunk_count + 1, sizeof *w->chunks) < 0)
    return -1;
  w->chunks[w->chunk_count++] = (wire_chunk_t){ off, ext, len };
  return 0;
}

/* Copies bytes in, extending the last chunk when it ends where they go. */
static int s_put_bytes(wire_t *w, const void *data, size_t len) {
  if (s_reserve((void **)&w->out, &w->out_cap, w->out_len + len, 1) < 0)
    return -1;
  memcpy(w->out + w->out_len, data, len);
  wire_chunk_t *last = w->chunk_count > w->head ? &w->chunks[w->chunk_count - 1] : NULL;
  if (last && !last->ext && last->off + last->len == w->out_len)
    last->len += len;
  else if (s_new_chunk(w, w->out_len, NULL, len) < 0)
    return -1;
  w->out_len += len;
  return 0;
}

static int s_put_frame(wire_t *w, int flags, const void *data, size_t size) {
  unsigned char header[9];
  size_t header_size = 2;
  if (size > 255) {
    flags |= WIRE_LONG;
    for (int i = 0; i < 8; i++)
      header[1 + i] = (unsigned char)((uint64_t)size >> (56 - 8 * i));
    header_size = 9;
  } else {
    header[1] = (unsigned char)size;
  }
  header[0] = (unsigned char)flags;
  if (s_put_bytes(w, header, header_size) < 0)
    return -1;
  if (size <= WIRE_COPY_MAX)
    return s_put_bytes(w, data, size);
  return s_new_chunk(w, 0, data, size);
}

int wire_queue(wire_t *w, const struct iovec *frames, int count) {
  for (int i = 0; i < count; i++)
    if (s_put_frame(w, i + 1 < count ? WIRE_MORE : 0, frames[i].iov_base, frames[i].iov_len) < 0)
      return -1;
  return 0;
}

int wire_pending(const wire_t *w) { return w->head < w->chunk_count; }

int wire_flush(wire_t *w) {
  while (w->head < w->chunk_count) {
    struct iovec iov[WIRE_IOV_MAX];
    int n = 0;
    for (size_t k = w->head; k < w->chunk_count && n < WIRE_IOV_MAX; k++, n++) {
      const wire_chunk_t *c = &w->chunks[k];
      const unsigned char *base = c->ext ? c->ext : w->out + c->off;
      size_t skip = k == w->head ? w->head_sent : 0;
      iov[n] = (struct iovec){ (void *)(base + skip), c->len - skip };
    }
    ssize_t sent = writev(w->fd, iov, n);
    if (sent < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? 1 : -1;
    }
    size_t left = (size_t)sent;
    while (left > 0) {
      size_t rest = w->chunks[w->head].len - w->head_sent;
      if (left < rest) { w->head_sent += left; break; }
      left -= rest;
      w->head++;
      w->head_sent = 0;
    }
  }
  w->chunk_count = w->head = w->head_sent = w->out_len = 0;
  return 0;
}

/* ---- input ------------------------------------------------------------- */

int wire_read(wire_t *w) {
  if (w->in_off > 0) {               /* what is parsed goes; the partial message moves down */
    memmove(w->in, w->in + w->in_off, w->in_len - w->in_off);
    w->in_len -= w->in_off;
    w->in_off = 0;
  }
  size_t need = (w->in_want > w->in_len ? w->in_want : w->in_len) + WIRE_READ_ROOM;
  if (s_reserve((void **)&w->in, &w->in_cap, need, 1) < 0) {
    errno = ENOMEM;
    return -1;
  }
  size_t room = w->in_cap - w->in_len;
  for (;;) {
    ssize_t got = read(w->fd, w->in + w->in_len, room);
    if (got > 0) {
      w->in_len += (size_t)got;
      return (size_t)got == room;
    }
    if (got == 0) { errno = ECONNRESET; return -1; }
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
  }
}

static uint64_t s_be64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

/* A command from the server: a PING is answered, anything else is an error. */
static int s_command(wire_t *w, const unsigned char *body, size_t size, char *why, size_t why_size) {
  size_t name_size = size ? body[0] : 0;
  if (size < 1 + name_size) {
    snprintf(why, why_size, "a malformed command");
    return -1;
  }
  if (name_size == 4 && memcmp(body + 1, "PING", 4) == 0) {
    if (size < 7) {
      snprintf(why, why_size, "a PING without its TTL");
      return -1;
    }
    unsigned char pong[1 + 4 + 16];  /* PONG + the ping's context (at most 16 bytes) */
    size_t context = size - 7 > 16 ? 16 : size - 7;
    pong[0] = 4;
    memcpy(pong + 1, "PONG", 4);
    memcpy(pong + 5, body + 7, context);
    return s_put_frame(w, WIRE_COMMAND, pong, 5 + context);
  }
  snprintf(why, why_size, "the server sent the command %.*s", (int)name_size, (const char *)body + 1);
  return -1;
}

int wire_next(wire_t *w, wire_frame_t *frames, int *count, char *why, size_t why_size) {
  size_t at = w->in_off;
  int n = 0;
  for (;;) {
    size_t have = w->in_len - at;
    if (have < 2) { w->in_want = at + 2 - w->in_off; return 0; }
    int flags = w->in[at];
    if (flags & ~(WIRE_MORE | WIRE_LONG | WIRE_COMMAND)) {
      snprintf(why, why_size, "a frame with flags 0x%02x", flags);
      return -1;
    }
    size_t header = 2;
    uint64_t size = w->in[at + 1];
    if (flags & WIRE_LONG) {
      if (have < 9) { w->in_want = at + 9 - w->in_off; return 0; }
      size = s_be64(w->in + at + 1);
      header = 9;
    }
    /* bounded before any room is made for it: the message so far, this frame */
    size_t so_far = at - w->in_off;
    if (so_far > WIRE_MESSAGE_MAX || size > WIRE_MESSAGE_MAX - so_far || n >= WIRE_MESSAGE_FRAMES) {
      snprintf(why, why_size, "a message over %u bytes or %d frames", WIRE_MESSAGE_MAX,
               WIRE_MESSAGE_FRAMES);
      return -1;
    }
    if (have - header < size) { w->in_want = at + header + (size_t)size - w->in_off; return 0; }
    const unsigned char *data = w->in + at + header;
    at += header + (size_t)size;
    if (flags & WIRE_COMMAND) {
      if (n > 0) {
        snprintf(why, why_size, "a command inside a message");
        return -1;
      }
      w->in_off = at;                /* a command stands alone: done with it */
      if (s_command(w, data, (size_t)size, why, why_size) < 0)
        return -1;
      continue;
    }
    if (n < WIRE_FRAMES_MAX)
      frames[n] = (wire_frame_t){ data, (size_t)size };
    n++;
    if (!(flags & WIRE_MORE)) {
      w->in_off = at;
      w->in_want = 0;
      *count = n;
      return 1;
    }
  }
}

/* ---- connecting -------------------------------------------------------- */

int wire_fd(const wire_t *w) { return w->fd; }

void wire_close(wire_t *w) {
  if (!w) return;
  if (w->fd >= 0) close(w->fd);
  free(w->out);
  free(w->chunks);
  free(w->in);
  free(w);
}

static int s_elapsed_ms(const struct timespec *start) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (int)((now.tv_sec - start->tv_sec) * 1000 + (now.tv_nsec - start->tv_nsec) / 1000000);
}

/* Blocking transfer of exactly `size` bytes within the handshake's time. */
static int s_transfer(int fd, void *data, size_t size, int writing,
                      const struct timespec *start, int timeout_ms) {
  unsigned char *p = data;
  while (size > 0) {
    int left = timeout_ms - s_elapsed_ms(start);
    struct pollfd pfd = { fd, writing ? POLLOUT : POLLIN, 0 };
    if (left <= 0 || poll(&pfd, 1, left) == 0) { errno = ETIMEDOUT; return -1; }
    ssize_t n = writing ? write(fd, p, size) : read(fd, p, size);
    if (n == 0) { errno = ECONNRESET; return -1; }
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return -1;
    }
    p += n;
    size -= (size_t)n;
  }
  return 0;
}

/* Splits "tcp://HOST:PORT" ("[v6]" hosts too). */
static int s_parse_endpoint(const char *endpoint, char *host, size_t host_size,
                            const char **port) {
  if (strncmp(endpoint, "tcp://", 6) != 0) return -1;
  const char *start = endpoint + 6, *colon = strrchr(start, ':');
  if (!colon || colon == start || !colon[1]) return -1;
  const char *end = colon;
  if (*start == '[' && end[-1] == ']') { start++; end--; }
  if ((size_t)(end - start) >= host_size) return -1;
  memcpy(host, start, (size_t)(end - start));
  host[end - start] = '\0';
  *port = colon + 1;
  return 0;
}

/* The value of READY property `name` in body[0..size), or NULL. */
static const unsigned char *s_property(const unsigned char *body, size_t size, const char *name,
                                       size_t *value_size) {
  size_t at = 1 + 5;                 /* past the command name "READY" */
  while (at < size) {
    size_t name_size = body[at++];
    if (size - at < name_size + 4) return NULL;
    const unsigned char *key = body + at;
    at += name_size;
    size_t len = (size_t)body[at] << 24 | (size_t)body[at + 1] << 16
               | (size_t)body[at + 2] << 8 | body[at + 3];
    at += 4;
    if (size - at < len) return NULL;
    if (name_size == strlen(name) && strncasecmp((const char *)key, name, name_size) == 0) {
      *value_size = len;
      return body + at;
    }
    at += len;
  }
  return NULL;
}

/* Greeting and READY, both ways; the probe a PROBE_ROUTER client sends. */
static int s_handshake(wire_t *w, const char *service, const struct timespec *start,
                       int timeout_ms, char *why, size_t why_size) {
  unsigned char greeting[WIRE_GREETING_SIZE] = { 0xff, [9] = 0x7f, [10] = 3, [11] = 0,
                                                 [12] = 'N', 'U', 'L', 'L' };
  unsigned char theirs[WIRE_GREETING_SIZE];
  if (s_transfer(w->fd, greeting, sizeof greeting, 1, start, timeout_ms) < 0
      || s_transfer(w->fd, theirs, sizeof theirs, 0, start, timeout_ms) < 0) {
    snprintf(why, why_size, "greeting: %s", strerror(errno));
    return -1;
  }
  if (theirs[0] != 0xff || theirs[9] != 0x7f || theirs[10] < 3
      || memcmp(theirs + 12, "NULL\0", 5) != 0) {
    snprintf(why, why_size, "the server is not a ZMTP 3 peer with the NULL mechanism");
    return -1;
  }
  /* READY: Socket-Type ROUTER and an empty Identity, as libzmq's ROUTER sends */
  static const unsigned char ready[] = {
    WIRE_COMMAND, 1 + 5 + 1 + 11 + 4 + 6 + 1 + 8 + 4,
    5, 'R', 'E', 'A', 'D', 'Y',
    11, 'S', 'o', 'c', 'k', 'e', 't', '-', 'T', 'y', 'p', 'e', 0, 0, 0, 6, 'R', 'O', 'U', 'T', 'E', 'R',
    8, 'I', 'd', 'e', 'n', 't', 'i', 't', 'y', 0, 0, 0, 0,
    0, 0                             /* then the probe: one empty frame */
  };
  unsigned char header[9], body[512];
  if (s_transfer(w->fd, (void *)ready, sizeof ready, 1, start, timeout_ms) < 0
      || s_transfer(w->fd, header, 2, 0, start, timeout_ms) < 0) {
    snprintf(why, why_size, "READY: %s", strerror(errno));
    return -1;
  }
  size_t size = header[1];
  if (header[0] == (WIRE_COMMAND | WIRE_LONG)) {
    if (s_transfer(w->fd, header + 2, 7, 0, start, timeout_ms) < 0) {
      snprintf(why, why_size, "READY: %s", strerror(errno));
      return -1;
    }
    size = (size_t)s_be64(header + 1);
  } else if (header[0] != WIRE_COMMAND) {
    snprintf(why, why_size, "the server's first frame is not a command");
    return -1;
  }
  if (size > sizeof body || s_transfer(w->fd, body, size, 0, start, timeout_ms) < 0) {
    snprintf(why, why_size, "READY: %s", size > sizeof body ? "too long" : strerror(errno));
    return -1;
  }
  if (size < 6 || body[0] != 5 || memcmp(body + 1, "READY", 5) != 0) {
    snprintf(why, why_size, "the server did not answer READY (a refused handshake?)");
    return -1;
  }
  size_t type_size = 0, id_size = 0;
  const unsigned char *type = s_property(body, size, "Socket-Type", &type_size);
  const unsigned char *id = s_property(body, size, "Identity", &id_size);
  if (!type || type_size != 6 || memcmp(type, "ROUTER", 6) != 0) {
    snprintf(why, why_size, "the server is not a ROUTER");
    return -1;
  }
  if (!id || id_size != strlen(service) || memcmp(id, service, id_size) != 0) {
    snprintf(why, why_size, "the server's routing id is not '%s'", service);
    return -1;
  }
  return 0;
}

/* A connected TCP socket (non-blocking) to one of `found`'s addresses, as
   libzmq tries them: in order, each within what is left of the time. */
static int s_connect(const struct addrinfo *found, const struct timespec *start, int timeout_ms,
                     int *error) {
  for (const struct addrinfo *a = found; a; a = a->ai_next) {
    int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) { *error = errno; continue; }
    int rc = connect(fd, a->ai_addr, a->ai_addrlen), left = timeout_ms - s_elapsed_ms(start);
    if (rc < 0 && errno == EINPROGRESS && left > 0) {
      struct pollfd p = { fd, POLLOUT, 0 };
      socklen_t size = sizeof *error;
      rc = poll(&p, 1, left) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, error, &size) == 0
           && *error == 0 ? 0 : -1;
      if (rc < 0 && !*error) *error = ETIMEDOUT;
    } else if (rc < 0) {
      *error = errno == EINPROGRESS ? ETIMEDOUT : errno;
    }
    if (rc == 0) return fd;
    close(fd);
  }
  return -1;
}

wire_t *wire_connect(const char *endpoint, const char *service, int timeout_ms,
                     char *why, size_t why_size) {
  char host[256];
  const char *port;
  if (s_parse_endpoint(endpoint, host, sizeof host, &port) < 0) {
    snprintf(why, why_size, "--wire raw needs a tcp://HOST:PORT endpoint");
    return NULL;
  }
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *found;
  int rc = getaddrinfo(host, port, &hints, &found);
  if (rc != 0) {
    snprintf(why, why_size, "%s: %s", endpoint, gai_strerror(rc));
    return NULL;
  }
  wire_t *w = calloc(1, sizeof *w);
  if (!w) {
    freeaddrinfo(found);
    snprintf(why, why_size, "out of memory");
    return NULL;
  }
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  int error = 0, on = 1;
  w->fd = s_connect(found, &start, timeout_ms, &error);
  freeaddrinfo(found);
  if (w->fd < 0 || setsockopt(w->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) < 0) {
    snprintf(why, why_size, "%s: %s", endpoint, strerror(w->fd < 0 ? error : errno));
    wire_close(w);
    return NULL;
  }
  if (s_handshake(w, service, &start, timeout_ms, why, why_size) < 0) {
    wire_close(w);
    return NULL;
  }
  return w;
}
