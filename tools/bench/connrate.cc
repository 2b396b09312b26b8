// connrate: new-connection rate of short TCP connections (benchmark helper
// for tools/bench/snat_bench.py; not part of the product).
//
//   connrate serve PORT [THREADS]          accept, read 1 byte, write 1 byte, close
//   connrate run HOST PORT COUNT PARALLEL  COUNT connections from PARALLEL threads;
//                                          prints "connections=N failed=F seconds=S rate=R"
//
// Each client connection: connect, write 1 byte, read the 1-byte answer, read
// EOF (the server closes first, so TIME_WAIT stays on the server and the
// client's ephemeral ports are reusable at once), close. The connect timeout
// is 3 s; a failure is counted, not retried.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

int Serve(int port, int threads) {
  auto loop = [port]() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(fd, 4096) != 0) {
      std::perror("connrate serve: bind/listen");
      std::exit(1);
    }
    for (;;) {
      const int c = ::accept(fd, nullptr, nullptr);
      if (c < 0) continue;
      char b = 0;
      if (::read(c, &b, 1) == 1) (void)!::write(c, &b, 1);
      ::close(c);
    }
  };
  std::vector<std::thread> ts;
  for (int i = 0; i < threads; ++i) ts.emplace_back(loop);
  std::printf("ready\n");
  std::fflush(stdout);
  for (auto& t : ts) t.join();
  return 0;
}

bool OneConnection(const sockaddr_in& dst) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  bool ok = false;
  do {
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&dst), sizeof(dst)) != 0 && errno != EINPROGRESS) break;
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 3000) != 1) break;
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) break;
    char b = 'x';
    if (::write(fd, &b, 1) != 1) break;
    p = {fd, POLLIN, 0};
    if (::poll(&p, 1, 3000) != 1 || ::read(fd, &b, 1) != 1) break;
    p = {fd, POLLIN, 0};
    if (::poll(&p, 1, 3000) != 1) break;  // EOF: the server closed first
    ok = true;
  } while (false);
  ::close(fd);
  return ok;
}

int Run(const char* host, int port, long count, int parallel) {
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host, &dst.sin_addr) != 1) {
    std::fprintf(stderr, "connrate: bad host %s\n", host);
    return 2;
  }
  std::atomic<long> next{0}, failed{0};
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> ts;
  for (int i = 0; i < parallel; ++i) {
    ts.emplace_back([&]() {
      while (next.fetch_add(1) < count) {
        if (!OneConnection(dst)) failed.fetch_add(1);
      }
    });
  }
  for (auto& t : ts) t.join();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("connections=%ld failed=%ld seconds=%.3f rate=%.1f\n", count, failed.load(), s,
              static_cast<double>(count - failed.load()) / s);
  return failed.load() == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  if (cmd == "serve" && argc >= 3) return Serve(std::atoi(argv[2]), argc > 3 ? std::atoi(argv[3]) : 2);
  if (cmd == "run" && argc == 6) return Run(argv[2], std::atoi(argv[3]), std::atol(argv[4]), std::atoi(argv[5]));
  std::fprintf(stderr, "usage: connrate serve PORT [THREADS] | run HOST PORT COUNT PARALLEL\n");
  return 2;
}
