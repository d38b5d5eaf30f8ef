// Calibration activations in memory or in an unlinked temporary file (pread/pwrite: the kernel's
// page cache holds them and writes them back under memory pressure; the process's RSS does not).
#include "pipeline/activation_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "formats/file_io.h"
#include "formats/scratch_file.h"

namespace llmc {

Result<std::unique_ptr<ActivationStore>> ActivationStore::create(const std::vector<int64_t>& floats,
                                                                 const std::string& spill_dir) {
  std::unique_ptr<ActivationStore> s(new ActivationStore());
  s->offsets_.assign(floats.size() + 1, 0);
  for (size_t i = 0; i < floats.size(); ++i) {
    if (floats[i] < 0) return make_error(ErrorCode::kInvalidArgument, "calibration: negative item length");
    s->offsets_[i + 1] = s->offsets_[i] + floats[i];
  }
  const int64_t total = s->offsets_.back();
  if (spill_dir.empty()) {
    s->memory_.resize(static_cast<size_t>(total));
    return s;
  }
  s->dir_ = spill_dir;
  LLMC_ASSIGN_OR_RETURN(s->fd_, open_unlinked(spill_dir, "calibration spill file"));
  const int rc = total > 0 ? ::posix_fallocate(s->fd_, 0, static_cast<off_t>(total * 4)) : 0;
  if (rc == EINVAL || rc == EOPNOTSUPP) {  // no fallocate on this file system: a sparse file
    if (::ftruncate(s->fd_, static_cast<off_t>(total * 4)) != 0)
      return make_error(ErrorCode::kIo, "calibration: cannot size the spill file in ", spill_dir, ": ",
                        std::strerror(errno));
  } else if (rc != 0) {
    return make_error(ErrorCode::kIo, "calibration: cannot reserve ", total * 4 >> 20, " MiB for activations in ",
                      spill_dir, ": ", std::strerror(rc),
                      "; free disk space, point TMPDIR elsewhere or raise --calib-ram");
  }
  return s;
}

ActivationStore::~ActivationStore() {
  if (fd_ >= 0) ::close(fd_);
}

Result<float*> ActivationStore::load(size_t i, std::vector<float>& buffer) {
  float* dst = slot(i, buffer);
  if (spilled()) LLMC_TRY(transfer(false, i, dst));
  return dst;
}

float* ActivationStore::slot(size_t i, std::vector<float>& buffer) {
  if (!spilled()) return memory_.data() + offsets_[i];
  if (buffer.size() < static_cast<size_t>(floats(i))) buffer.resize(static_cast<size_t>(floats(i)));
  return buffer.data();
}

Result<void> ActivationStore::save(size_t i, const float* data) {
  if (spilled()) return transfer(true, i, const_cast<float*>(data));
  if (data != memory_.data() + offsets_[i]) std::memcpy(memory_.data() + offsets_[i], data, floats(i) * 4);
  return {};
}

Result<void> ActivationStore::transfer(bool write, size_t i, float* data) {
  return transfer_at(fd_, write, data, static_cast<size_t>(floats(i)) * 4, static_cast<uint64_t>(offsets_[i]) * 4,
                     "calibration: the spill file in " + dir_);
}

}  // namespace llmc
