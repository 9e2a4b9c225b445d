#include "relay/stdio_pump.hpp"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/log.hpp"
#include "relay/terminal_filter.hpp"

namespace ik {
namespace {

constexpr size_t kTurnBytes = size_t{1} << 20;  // per stream and wake-up: the loop stays responsive

// Where one stream goes, written without ever blocking the loop on a reader.
class Sink {
 public:
  enum class Mode { kFile, kNonBlocking, kSocket, kPollFirst, kBroken };

  explicit Sink(int fd) : fd_(fd) {
    struct stat st {};
    if (fd < 0 || fstat(fd, &st) != 0) {
      mode_ = Mode::kBroken;
      return;
    }
    tty_ = isatty(fd) == 1;
    if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode) || (S_ISCHR(st.st_mode) && !tty_)) {
      mode_ = Mode::kFile;  // never waits for a reader (/dev/null, a log file)
    } else if (S_ISSOCK(st.st_mode)) {
      mode_ = Mode::kSocket;  // send(MSG_DONTWAIT) leaves the shared description alone
    } else {
      // A pipe, FIFO or terminal: our own non-blocking description of it.
      // O_NONBLOCK on fd itself would be seen by everyone sharing it (the
      // Jupyter server writing its log would get EAGAIN). O_NOCTTY: opening
      // a terminal must not make it ours.
      const std::string path = "/proc/self/fd/" + std::to_string(fd);
      own_.reset(open(path.c_str(), O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
      if (own_.valid()) {
        mode_ = Mode::kNonBlocking;
        fd_ = own_.get();
      } else {
        // Not allowed to reopen (a pipe or terminal owned by another user):
        // write only when poll says there is room, in pieces small enough
        // that a pipe takes them whole (PIPE_BUF) and a terminal at once.
        log::step("stdio: cannot reopen fd %d (%s); writing after poll in small pieces", fd, std::strerror(errno));
        mode_ = Mode::kPollFirst;
        chunk_ = tty_ ? 256 : PIPE_BUF;
      }
    }
  }

  bool tty() const { return tty_; }
  bool broken() const { return mode_ == Mode::kBroken; }
  bool pollable() const { return mode_ != Mode::kFile && mode_ != Mode::kBroken; }
  int fd() const { return fd_; }

  // > 0: bytes written; 0: full, try when fd() is writable; < 0: failed for good.
  ssize_t write(const char* p, size_t n) {
    for (;;) {
      ssize_t w = -1;
      switch (mode_) {
        case Mode::kBroken: return -1;
        case Mode::kFile:
        case Mode::kNonBlocking: w = ::write(fd_, p, n); break;
        case Mode::kSocket: w = ::send(fd_, p, n, MSG_DONTWAIT | MSG_NOSIGNAL); break;
        case Mode::kPollFirst: {
          pollfd pfd{fd_, POLLOUT, 0};
          if (poll(&pfd, 1, 0) < 0 && errno == EINTR) continue;
          if (pfd.revents & (POLLERR | POLLHUP | POLLNVAL)) w = -1, errno = EPIPE;
          else if (!(pfd.revents & POLLOUT)) return 0;
          else w = ::write(fd_, p, std::min(n, chunk_));
          break;
        }
      }
      if (w >= 0) return w;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      log::step("stdio: writing to fd %d failed (%s): dropping this stream's output from now on", fd_,
                std::strerror(errno));
      mode_ = Mode::kBroken;
      own_.reset();
      return -1;
    }
  }

 private:
  int fd_;
  UniqueFd own_;
  Mode mode_ = Mode::kFile;
  bool tty_ = false;
  size_t chunk_ = 0;
};

struct PumpStream {
  const char* name;
  UniqueFd source;
  Sink sink;
  TerminalFilter filter;
  std::vector<char> buf;  // bytes read and (filtered) not yet written
  size_t head = 0, tail = 0;
  bool eof = false;
  bool reading = false;      // source registered for EPOLLIN
  bool waiting_out = false;  // sink registered for EPOLLOUT
  StdioCounters c;
};

}  // namespace

class StdioPump::Impl {
 public:
  UniqueFd epoll_;
  std::vector<std::unique_ptr<PumpStream>> streams_;
  std::vector<char> scratch_;  // raw input before the terminal filter

  void set_reading(size_t i, bool on) {
    PumpStream& s = *streams_[i];
    if (s.reading == on || s.eof) return;
    // DEL rather than no events: a pipe whose writers are gone reports
    // EPOLLHUP whatever we ask for, and would keep a level-triggered loop spinning.
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i * 2;
    epoll_ctl(epoll_.get(), on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, s.source.get(), &ev);
    s.reading = on;
  }

  void set_waiting_out(size_t i, bool on) {
    PumpStream& s = *streams_[i];
    if (s.waiting_out == on) return;
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.u64 = i * 2 + 1;
    if (epoll_ctl(epoll_.get(), on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, s.sink.fd(), &ev) != 0 && on) {
      // Cannot wait for room: drop what is pending rather than stall forever.
      drop_pending(s);
      return;
    }
    s.waiting_out = on;
  }

  static void drop_pending(PumpStream& s) {
    s.c.dropped += s.tail - s.head;
    s.head = s.tail = 0;
  }

  // Writes what is buffered. False when the destination is full.
  bool flush(size_t i) {
    PumpStream& s = *streams_[i];
    while (s.head < s.tail) {
      ssize_t w = s.sink.write(s.buf.data() + s.head, s.tail - s.head);
      if (w < 0) {
        drop_pending(s);
        break;
      }
      if (w == 0) {
        ++s.c.stalls;
        set_reading(i, false);  // back-pressure: the program blocks on its pipe
        set_waiting_out(i, true);
        return false;
      }
      s.head += static_cast<size_t>(w);
      s.c.bytes_out += static_cast<uint64_t>(w);
    }
    s.head = s.tail = 0;
    return true;
  }

  void end_of_stream(size_t i) {
    PumpStream& s = *streams_[i];
    set_reading(i, false);
    s.eof = true;
    s.source.reset();
    if (s.sink.tty()) s.tail += s.filter.finish(s.buf.data() + s.tail);
  }

  // Reads from the program while the destination keeps up, up to kTurnBytes.
  void step(size_t i) {
    PumpStream& s = *streams_[i];
    size_t budget = kTurnBytes;
    for (;;) {
      if (!flush(i)) return;
      if (s.eof || budget == 0) return;
      const bool filter = s.sink.tty() && !s.sink.broken();
      char* into = filter ? scratch_.data() : s.buf.data();
      ssize_t r = ::read(s.source.get(), into, scratch_.size());
      if (r > 0) {
        const auto n = static_cast<size_t>(r);
        s.c.bytes_in += n;
        budget -= std::min(budget, n);
        if (filter) {
          const uint64_t before = s.filter.removed();
          s.tail = s.filter.filter(into, n, s.buf.data());
          s.c.removed += s.filter.removed() - before;
        } else {
          s.tail = n;
        }
        s.head = 0;
        continue;
      }
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        set_reading(i, true);
        return;
      }
      end_of_stream(i);  // EOF (every writer gone), or an error we cannot fix
    }
  }

  void handle_events(int timeout_ms) {
    std::array<epoll_event, 8> events{};
    const int n = epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), timeout_ms);
    for (int k = 0; k < n; ++k) {
      const size_t i = events[k].data.u64 / 2;
      if (events[k].data.u64 % 2 == 1) {  // the destination has room again
        set_waiting_out(i, false);
        set_reading(i, true);
      }
      step(i);
    }
  }

  bool done() const {
    return std::all_of(streams_.begin(), streams_.end(), [](const auto& s) { return s->eof && s->head == s->tail; });
  }
};

namespace {
int64_t now_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}
}  // namespace

StdioPump::StdioPump(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StdioPump::~StdioPump() = default;

Result<std::unique_ptr<StdioPump>> StdioPump::create(ChildStdio& stdio) {
  std::vector<Stream> streams;
  streams.push_back(Stream{"stdout", std::move(stdio.out_read), STDOUT_FILENO});
  streams.push_back(Stream{"stderr", std::move(stdio.err_read), STDERR_FILENO});
  return create(std::move(streams));
}

Result<std::unique_ptr<StdioPump>> StdioPump::create(std::vector<Stream> streams, size_t buffer_bytes) {
  // A destination whose reader went away must give EPIPE, not kill us.
  // (The program's own signal dispositions are reset before its exec.)
  signal(SIGPIPE, SIG_IGN);
  auto impl = std::make_unique<Impl>();
  impl->epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!impl->epoll_.valid()) return sys_error("stdio: epoll_create1");
  impl->scratch_.resize(buffer_bytes);
  for (auto& st : streams) {
    auto s = std::make_unique<PumpStream>(PumpStream{st.name, std::move(st.source), Sink(st.sink), {}, {}});
    s->buf.resize(buffer_bytes + TerminalFilter::kSlack);
    if (s->sink.tty()) log::step("stdio: %s goes to a terminal: control sequences are removed", st.name);
    impl->streams_.push_back(std::move(s));
  }
  for (size_t i = 0; i < impl->streams_.size(); ++i) impl->set_reading(i, true);
  return std::unique_ptr<StdioPump>(new StdioPump(std::move(impl)));
}

int StdioPump::fd() const { return impl_->epoll_.get(); }
void StdioPump::on_ready() { impl_->handle_events(0); }
bool StdioPump::done() const { return impl_->done(); }
StdioCounters StdioPump::counters(size_t stream) const { return impl_->streams_.at(stream)->c; }

void StdioPump::finish(int timeout_ms) {
  const int64_t deadline = now_ms() + timeout_ms;
  // Sources that never signalled (nothing written) still need their EOF seen.
  for (size_t i = 0; i < impl_->streams_.size(); ++i) impl_->step(i);
  while (!impl_->done()) {
    const int64_t left = deadline - now_ms();
    if (left <= 0) break;
    impl_->handle_events(static_cast<int>(left));
  }
  for (auto& s : impl_->streams_) {
    if (s->eof && s->head == s->tail) continue;
    Impl::drop_pending(*s);
    if (s->source.valid()) {  // what is still in the pipe: counted, not kept
      ssize_t r;
      while ((r = ::read(s->source.get(), impl_->scratch_.data(), impl_->scratch_.size())) > 0)
        s->c.dropped += static_cast<uint64_t>(r);
    }
    log::step("stdio: %s: destination took nothing for %d ms after the program exited; rest dropped", s->name,
              timeout_ms);
  }
}

std::string StdioPump::describe() const {
  std::string out;
  for (const auto& s : impl_->streams_) {
    char line[256];
    std::snprintf(line, sizeof line,
                  "  %s: %llu bytes read, %llu written, %llu dropped, %llu control bytes removed, %llu stalls "
                  "(destination full)\n",
                  s->name, static_cast<unsigned long long>(s->c.bytes_in),
                  static_cast<unsigned long long>(s->c.bytes_out), static_cast<unsigned long long>(s->c.dropped),
                  static_cast<unsigned long long>(s->c.removed), static_cast<unsigned long long>(s->c.stalls));
    out += line;
  }
  if (!out.empty()) out.pop_back();
  return out;
}

}  // namespace ik
