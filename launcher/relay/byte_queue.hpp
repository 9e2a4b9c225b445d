// Bytes read from one side of a relayed connection and not yet written to
// the other: one fixed buffer per direction, allocated on first use, so idle
// connections cost no buffer and memory is bounded in bytes.
#pragma once
#include <cstddef>
#include <cstring>
#include <memory>

namespace ik::relay {

class ByteQueue {
 public:
  explicit ByteQueue(size_t capacity) : capacity_(capacity) {}
  size_t pending() const { return tail_ - head_; }
  bool full() const { return pending() == capacity_; }
  // Contiguous free space at the end (compacting first if that helps).
  unsigned char* write_area(size_t& n) {
    if (!data_) data_ = std::make_unique<unsigned char[]>(capacity_);
    if (head_ > 0 && tail_ == capacity_) {
      std::memmove(data_.get(), data_.get() + head_, pending());
      tail_ -= head_;
      head_ = 0;
    }
    n = capacity_ - tail_;
    return data_.get() + tail_;
  }
  void commit(size_t n) { tail_ += n; }
  const unsigned char* read_area() const { return data_.get() + head_; }
  void consume(size_t n) {
    head_ += n;
    if (head_ == tail_) head_ = tail_ = 0;
  }
  void clear() { head_ = tail_ = 0; }

 private:
  size_t capacity_;
  std::unique_ptr<unsigned char[]> data_;
  size_t head_ = 0, tail_ = 0;
};

}  // namespace ik::relay
