// Immutable byte buffers that either own their memory or view a mapped file kept alive by an owner.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

namespace llmc {

class Bytes {
 public:
  Bytes() = default;
  static Bytes owned(std::vector<uint8_t> bytes) {
    return adopt(std::make_shared<std::vector<uint8_t>>(std::move(bytes)));
  }
  // The bytes of v, copied straight into the owned buffer (no moved-from temporary: GCC 12 took
  // its destructor for a free of a non-heap pointer, -Wfree-nonheap-object).
  template <class T>
  static Bytes from_vector(const std::vector<T>& v) {
    auto holder = std::make_shared<std::vector<uint8_t>>(v.size() * sizeof(T));
    if (!holder->empty()) std::memcpy(holder->data(), v.data(), holder->size());
    return adopt(std::move(holder));
  }
  // A view into memory that `owner` keeps alive (e.g. a mapped file).
  static Bytes view(std::shared_ptr<const void> owner, const uint8_t* data, size_t size) {
    Bytes b;
    b.owner_ = std::move(owner);
    b.data_ = data;
    b.size_ = size;
    return b;
  }
  // Shares ownership with this buffer; [offset, offset+size) must lie inside it.
  Bytes slice(size_t offset, size_t size) const { return view(owner_, data_ + offset, size); }

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<const uint8_t> span() const { return {data_, size_}; }
  template <class T>
  const T* as() const {
    return reinterpret_cast<const T*>(data_);
  }
  // True when the memory belongs to a mapped file rather than the heap.
  bool is_view_of(const void* owner) const { return owner_.get() == owner; }

 private:
  static Bytes adopt(std::shared_ptr<std::vector<uint8_t>> holder) {
    Bytes b;
    b.data_ = holder->data();
    b.size_ = holder->size();
    b.owner_ = std::move(holder);
    return b;
  }
  std::shared_ptr<const void> owner_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace llmc
