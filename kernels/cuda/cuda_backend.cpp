// The CUDA backend behind the kernel interface (kernels/backend.hpp).
//
// Memory: the engines hand every op host activations. Weights (converted to bf16 once), norm
// vectors and KV layers become resident on the device the first time an op sees them, keyed by
// their host address; the KV cache then lives on the device only (the host copy is not written).
// Each op stages its activations through one pinned host buffer (cudaMallocHost): host ->
// pinned -> device, the kernels, device -> pinned -> host, on one stream, synchronised before it
// returns. The staging buffers grow to the largest op seen and are kept.
//
// Ops without a device kernel worth a round trip run on the host, as the CPU backend does:
// round_activations (exact elementwise rounding) and sample (reads one host logits row).
#include <cuda_runtime_api.h>

#include <cstring>
#include <unordered_map>
#include <vector>

#include "kernels/cpu/cpu_kernels.hpp"
#include "kernels/cuda/cuda_kernels.hpp"
#include "kernels/cuda_factory.hpp"

namespace afd::kernels {

namespace {

namespace cu = kernels::cuda;

std::size_t round_up(std::size_t n) { return (n + 255) / 256 * 256; }

/// Pinned host memory (RAII).
class pinned_buffer {
 public:
  pinned_buffer() = default;
  pinned_buffer(const pinned_buffer&) = delete;
  pinned_buffer& operator=(const pinned_buffer&) = delete;
  ~pinned_buffer() {
    if (data_) cudaFreeHost(data_);
  }
  /// Grows to at least `bytes` (contents lost); false when cudaMallocHost fails.
  bool reserve(std::size_t bytes) {
    if (bytes <= size_) return true;
    if (data_) cudaFreeHost(data_);
    data_ = nullptr;
    size_ = 0;
    if (cudaMallocHost(&data_, bytes) != cudaSuccess) {
      (void)cudaGetLastError();
      data_ = nullptr;
      return false;
    }
    size_ = bytes;
    return true;
  }
  std::byte* data() const { return static_cast<std::byte*>(data_); }

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

/// A weight matrix resident on the device as bf16 [rows, cols].
struct resident_weight {
  cu::device_buffer data;
  std::int64_t rows = 0, cols = 0;
  cu::device_weights view() const { return {dtype::bf16, data.data(), nullptr, 1, rows, cols, cols}; }
};

struct resident_kv {
  cu::device_buffer k, v;
};

class cuda_backend final : public backend {
 public:
  cuda_backend(int ordinal, std::string device, cu::device_stream stream)
      : ordinal_(ordinal), device_(std::move(device)), stream_(std::move(stream)) {}

  std::string name() const override { return "cuda"; }
  const std::string& device() const noexcept override { return device_; }
  bool host_memory() const noexcept override { return false; }

  expected<void*> allocate(std::size_t bytes) override {
    if (bytes == 0) return static_cast<void*>(nullptr);
    cudaSetDevice(ordinal_);
    void* p = nullptr;
    if (const cudaError_t e = cudaMalloc(&p, bytes); e != cudaSuccess) {
      (void)cudaGetLastError();
      return fail(errc::unavailable, device_, ": cudaMalloc of ", bytes, " bytes failed: ", cudaGetErrorString(e));
    }
    return p;
  }
  void release(void* memory) noexcept override {
    if (memory) cudaFree(memory);
  }
  expected<void> copy_to_backend(void* dst, const void* host_src, std::size_t bytes) override {
    cudaSetDevice(ordinal_);
    if (const cudaError_t e = cudaMemcpy(dst, host_src, bytes, cudaMemcpyHostToDevice); e != cudaSuccess)
      return fail(errc::unavailable, device_, ": cudaMemcpy host to device failed: ", cudaGetErrorString(e));
    return {};
  }
  expected<void> copy_to_host(void* host_dst, const void* src, std::size_t bytes) override {
    cudaSetDevice(ordinal_);
    if (const cudaError_t e = cudaMemcpy(host_dst, src, bytes, cudaMemcpyDeviceToHost); e != cudaSuccess)
      return fail(errc::unavailable, device_, ": cudaMemcpy device to host failed: ", cudaGetErrorString(e));
    return {};
  }

  op_status gather_rows(const gather_rows_params& p) override {
    const auto m = static_cast<std::int64_t>(p.ids.size());
    const std::int64_t n = p.table.cols;
    const resident_weight* table = weight(p.table);
    if (!table) return failure();
    if (!begin(bytes_of<std::int32_t>(m) + bytes_of<std::uint16_t>(m * n) + bytes_of<float>(m * n),
               bytes_of<std::int32_t>(m) + bytes_of<float>(m * n)))
      return failure();
    auto* ids = upload(p.ids.data(), m);
    auto* rows = device_scratch<std::uint16_t>(m * n);
    auto* out = device_scratch<float>(m * n);
    if (!launched(cu::gather_rows_bf16(table->data.data(), dtype::bf16, nullptr, n, ids, m, rows, stream()),
                  "gather_rows_bf16") ||
        !launched(cu::convert_bf16_to_f32(rows, m * n, out, stream()), "convert_bf16_to_f32"))
      return failure();
    download(p.out, out, m * n);
    return finish();
  }

  op_status rmsnorm(const rmsnorm_params& p) override {
    const float* w = vector(p.weight);
    if (!w) return failure();
    if (!begin(2 * bytes_of<float>(p.m * p.n), 2 * bytes_of<float>(p.m * p.n))) return failure();
    const float* x = upload(p.x, p.m * p.n);
    float* y = device_scratch<float>(p.m * p.n);
    if (!launched(cu::rmsnorm(x, p.m, p.n, w, p.eps, y, stream()), "rmsnorm")) return failure();
    download(p.y, y, p.m * p.n);
    return finish();
  }

  op_status gemm(const gemm_params& p) override {
    const resident_weight* w = weight(p.w);
    if (!w) return failure();
    const std::int64_t n = p.w.rows;
    if (!begin(bytes_of<float>(p.m * p.k) + bytes_of<std::uint16_t>(p.m * p.k) + bytes_of<float>(p.m * n),
               bytes_of<float>(p.m * p.k) + bytes_of<float>(p.m * n)))
      return failure();
    const float* x = upload(p.x, p.m * p.k);
    auto* x16 = device_scratch<std::uint16_t>(p.m * p.k);
    float* y = device_scratch<float>(p.m * n);
    if (!launched(cu::convert_f32_to_bf16(x, p.m * p.k, x16, stream()), "convert_f32_to_bf16") ||
        !launched(cu::grouped_gemm(x16, {nullptr, 1, p.m}, w->view(), nullptr, dtype::f32, y, stream()), "grouped_gemm"))
      return failure();
    download(p.y, y, p.m * n);
    return finish();
  }

  op_status rope(const rope_params& p) override {
    const std::int64_t count = p.m * p.heads * p.head_dim;
    // Pinned: x up, positions up, x down.
    if (!begin(bytes_of<float>(count) + bytes_of<std::int32_t>(p.m), 2 * bytes_of<float>(count) + bytes_of<std::int32_t>(p.m)))
      return failure();
    float* x = upload(p.x, count);
    const std::int32_t* positions = upload(p.positions.data(), p.m);
    if (!launched(cu::rope_neox(x, p.m, p.heads, p.head_dim, positions, p.theta, stream()), "rope_neox")) return failure();
    download(p.x, x, count);
    return finish();
  }

  op_status kv_append(const kv_append_params& p) override {
    const resident_kv* kv = cache(p.cache);
    if (!kv) return failure();
    const auto m = static_cast<std::int64_t>(p.slots.size());
    const std::int64_t max_blocks = table_width(p.cache, p.slots);
    const std::size_t tables = bytes_of<std::int32_t>(m * max_blocks) + 2 * bytes_of<std::int32_t>(m);
    if (!begin(tables + 2 * bytes_of<float>(m * p.width), tables + 2 * bytes_of<float>(m * p.width))) return failure();
    const cu::kv_token_slots slots = upload_slots(p.cache, p.slots, max_blocks);
    const float* k = upload(p.k, m * p.width);
    const float* v = upload(p.v, m * p.width);
    if (!launched(cu::kv_append(device_view(p.cache, *kv), slots, k, v, stream()), "kv_append")) return failure();
    return finish();
  }

  op_status attention(const attention_params& p) override {
    const resident_kv* kv = cache(p.cache);
    if (!kv) return failure();
    const auto m = static_cast<std::int64_t>(p.slots.size());
    const std::int64_t max_blocks = table_width(p.cache, p.slots);
    std::int64_t max_context = 0;
    for (const kv_slot& s : p.slots) max_context = std::max<std::int64_t>(max_context, s.position + 1);
    const std::int64_t count = m * p.heads * p.head_dim;
    const std::size_t workspace = cu::attention_workspace_bytes(m, p.heads, p.head_dim, max_context);
    const std::size_t tables = bytes_of<std::int32_t>(m * max_blocks) + 2 * bytes_of<std::int32_t>(m);
    if (!begin(tables + 2 * bytes_of<float>(count) + round_up(workspace), tables + 2 * bytes_of<float>(count)))
      return failure();
    const cu::kv_token_slots slots = upload_slots(p.cache, p.slots, max_blocks);
    const float* q = upload(p.q, count);
    float* out = device_scratch<float>(count);
    void* ws = device_scratch<std::byte>(static_cast<std::int64_t>(workspace));
    if (!launched(cu::attention(device_view(p.cache, *kv), slots, q, p.heads, p.scale, max_context, out, ws, workspace,
                                stream()),
                  "attention"))
      return failure();
    download(p.out, out, count);
    return finish();
  }

  op_status router_topk(const router_topk_params& p) override {
    if (!begin(bytes_of<float>(p.m * p.n_experts) + 2 * bytes_of<float>(p.m * p.k),
               bytes_of<float>(p.m * p.n_experts) + 2 * bytes_of<float>(p.m * p.k)))
      return failure();
    const float* logits = upload(p.logits, p.m * p.n_experts);
    auto* ids = device_scratch<std::int32_t>(p.m * p.k);
    auto* weights = device_scratch<float>(p.m * p.k);
    if (!launched(cu::router_topk(logits, p.m, p.n_experts, p.k, p.renormalise, ids, weights, stream()), "router_topk"))
      return failure();
    download(p.ids, ids, p.m * p.k);
    download(p.weights, weights, p.m * p.k);
    return finish();
  }

  op_status swiglu(const swiglu_params& p) override {
    const resident_weight* gate = weight(p.gate);
    const resident_weight* up = gate ? weight(p.up) : nullptr;
    const resident_weight* down = up ? weight(p.down) : nullptr;
    if (!down) return failure();
    const std::int64_t inner = p.gate.rows, h = p.hidden;
    if (!begin(bytes_of<float>(p.m * h) + bytes_of<std::uint16_t>(p.m * h) + bytes_of<std::uint16_t>(p.m * inner) +
                   bytes_of<float>(p.m * h),
               2 * bytes_of<float>(p.m * h)))
      return failure();
    const float* x = upload(p.x, p.m * h);
    auto* x16 = device_scratch<std::uint16_t>(p.m * h);
    auto* hidden16 = device_scratch<std::uint16_t>(p.m * inner);
    float* y = device_scratch<float>(p.m * h);
    const cu::row_groups all{nullptr, 1, p.m};
    if (!launched(cu::convert_f32_to_bf16(x, p.m * h, x16, stream()), "convert_f32_to_bf16") ||
        !launched(cu::grouped_swiglu(x16, all, gate->view(), up->view(), hidden16, stream()), "grouped_swiglu") ||
        !launched(cu::grouped_gemm(hidden16, all, down->view(), nullptr, dtype::f32, y, stream()), "grouped_gemm"))
      return failure();
    download(p.y, y, p.m * h);
    return finish();
  }

  op_status quantize_fp8(const quantize_fp8_params& p) override {
    const std::int64_t blocks = p.m * ((p.n + fp8_activation_block - 1) / fp8_activation_block);
    const std::size_t bytes = bytes_of<float>(p.m * p.n) + bytes_of<std::uint8_t>(p.m * p.n) + bytes_of<float>(blocks);
    if (!begin(bytes, bytes)) return failure();
    const float* x = upload(p.x, p.m * p.n);
    auto* q = device_scratch<std::uint8_t>(p.m * p.n);
    auto* scales = device_scratch<float>(blocks);
    if (!launched(cu::quantize_fp8(x, p.m, p.n, q, scales, stream()), "quantize_fp8")) return failure();
    download(p.q, q, p.m * p.n);
    download(p.scales, scales, blocks);
    return finish();
  }

  op_status dequantize_fp8(const dequantize_fp8_params& p) override {
    const std::int64_t blocks = p.m * ((p.n + fp8_activation_block - 1) / fp8_activation_block);
    const std::size_t bytes = bytes_of<float>(p.m * p.n) + bytes_of<std::uint8_t>(p.m * p.n) + bytes_of<float>(blocks);
    if (!begin(bytes, bytes)) return failure();
    const std::uint8_t* q = upload(p.q, p.m * p.n);
    const float* scales = upload(p.scales, blocks);
    float* x = device_scratch<float>(p.m * p.n);
    if (!launched(cu::dequantize_fp8(q, scales, p.m, p.n, dtype::f32, x, stream()), "dequantize_fp8")) return failure();
    download(p.x, x, p.m * p.n);
    return finish();
  }

  op_status round_activations(const round_activations_params& p) override {
    cpu::round_activations(p.wire, p.x, p.m, p.n);
    return op_status::ok;
  }

  op_status sample(const sample_params& p) override {
    *p.token = cpu::sample(p.logits, p.vocab, p.sampling, p.token_index);
    return op_status::ok;
  }

  std::string last_error() const override { return error_; }

 private:
  static constexpr op_status failed_ = op_status::failed;

  /// The status of the op that just failed (a kernel may say unsupported or invalid_argument).
  op_status failure() {
    const op_status s = failed_status_;
    failed_status_ = op_status::failed;
    return s;
  }

  template <class T>
  static std::size_t bytes_of(std::int64_t count) {
    return round_up(static_cast<std::size_t>(count) * sizeof(T));
  }

  cu::stream_handle stream() const { return stream_.handle(); }

  op_status set_error(op_status s, std::string message) {
    error_ = std::move(message);
    return s;
  }

  /// Starts an op: current device, staging room for `device_bytes` on the device and
  /// `pinned_bytes` of pinned host memory (grown only here, never while work is queued).
  bool begin(std::size_t device_bytes, std::size_t pinned_bytes) {
    error_.clear();
    downloads_.clear();
    device_used_ = pinned_used_ = 0;
    if (const cudaError_t e = cudaSetDevice(ordinal_); e != cudaSuccess) {
      set_error(failed_, device_ + ": cudaSetDevice: " + cudaGetErrorString(e));
      return false;
    }
    if (device_bytes > scratch_.size()) {
      scratch_ = cu::device_buffer();
      auto grown = cu::device_buffer::allocate(device_bytes);
      if (!grown) {
        set_error(failed_, device_ + ": staging: " + grown.err().message());
        return false;
      }
      scratch_ = std::move(*grown);
    }
    if (!pinned_.reserve(pinned_bytes)) {
      set_error(failed_, device_ + ": cudaMallocHost of " + std::to_string(pinned_bytes) + " bytes failed");
      return false;
    }
    return true;
  }

  template <class T>
  T* device_scratch(std::int64_t count) {
    auto* p = reinterpret_cast<T*>(scratch_.as<std::byte>() + device_used_);
    device_used_ += bytes_of<T>(count);
    return p;
  }

  /// host -> pinned -> device scratch (queued on the stream).
  template <class T>
  T* upload(const T* host, std::int64_t count) {
    const std::size_t bytes = static_cast<std::size_t>(count) * sizeof(T);
    std::byte* staged = pinned_.data() + pinned_used_;
    pinned_used_ += round_up(bytes);
    if (bytes > 0) std::memcpy(staged, host, bytes);
    T* dst = device_scratch<T>(count);
    if (bytes > 0) cudaMemcpyAsync(dst, staged, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream()));
    return dst;
  }

  /// device -> pinned now (queued), pinned -> host in finish().
  template <class T>
  void download(T* host, const T* device, std::int64_t count) {
    const std::size_t bytes = static_cast<std::size_t>(count) * sizeof(T);
    std::byte* staged = pinned_.data() + pinned_used_;
    pinned_used_ += round_up(bytes);
    if (bytes > 0) cudaMemcpyAsync(staged, device, bytes, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(stream()));
    downloads_.push_back({host, staged, bytes});
  }

  /// Waits for the op's work and copies its results out of the pinned buffer.
  op_status finish() {
    const cudaError_t e = cudaStreamSynchronize(static_cast<cudaStream_t>(stream()));
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      return set_error(failed_, device_ + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
    }
    for (const pending_download& d : downloads_)
      if (d.bytes > 0) std::memcpy(d.host, d.staged, d.bytes);
    downloads_.clear();
    return op_status::ok;
  }

  bool launched(cu::launch_status s, const char* kernel) {
    if (s == cu::launch_status::ok) return true;
    (void)cudaStreamSynchronize(static_cast<cudaStream_t>(stream()));  // the staging stays valid until idle
    std::string message = device_ + ": kernel " + kernel + ": " + cu::to_string(s);
    if (s == cu::launch_status::launch_failed) message += std::string(": ") + cu::last_launch_error();
    if (s == cu::launch_status::unsupported)
      message += " (a shape or dtype this build's CUDA kernels do not cover; see kernels/cuda/README.md)";
    error_ = std::move(message);
    failed_status_ = s == cu::launch_status::unsupported        ? op_status::unsupported
                     : s == cu::launch_status::invalid_argument ? op_status::invalid_argument
                                                                : op_status::failed;
    return false;
  }

  /// The resident bf16 copy of a weight matrix (uploaded on first use), or null with error_ set.
  const resident_weight* weight(const weight_view& w) {
    const weight_key key{w.data, w.rows, w.cols};
    if (auto it = weights_.find(key); it != weights_.end()) return &it->second;
    error_.clear();
    if (cudaSetDevice(ordinal_) != cudaSuccess) return no_weight("cudaSetDevice failed");
    const auto count = static_cast<std::size_t>(w.rows * w.cols);
    std::vector<std::uint16_t> bf16(count);
    for (std::size_t i = 0; i < count; ++i)
      bf16[i] = w.type == dtype::bf16 ? static_cast<const std::uint16_t*>(w.data)[i]
                                      : f32_to_bf16(load_as_f32(w.type, w.data, i));
    auto buffer = cu::device_buffer::allocate(count * sizeof(std::uint16_t));
    if (!buffer) return no_weight(buffer.err().message());
    if (cudaMemcpy(buffer->data(), bf16.data(), count * sizeof(std::uint16_t), cudaMemcpyHostToDevice) != cudaSuccess)
      return no_weight("cudaMemcpy of the weight failed");
    resident_weight r{std::move(*buffer), w.rows, w.cols};
    return &weights_.emplace(key, std::move(r)).first->second;
  }

  const resident_weight* no_weight(const std::string& why) {
    (void)cudaGetLastError();
    error_ = device_ + ": cannot make a weight resident: " + why;
    return nullptr;
  }

  /// The resident copy of a norm vector.
  const float* vector(std::span<const float> v) {
    if (auto it = vectors_.find(v.data()); it != vectors_.end()) return it->second.as<float>();
    error_.clear();
    cudaSetDevice(ordinal_);
    auto buffer = cu::device_buffer::allocate(v.size_bytes());
    if (!buffer || cudaMemcpy(buffer->data(), v.data(), v.size_bytes(), cudaMemcpyHostToDevice) != cudaSuccess) {
      (void)cudaGetLastError();
      error_ = device_ + ": cannot make a norm weight resident" + (buffer ? "" : ": " + buffer.err().message());
      return nullptr;
    }
    return vectors_.emplace(v.data(), std::move(*buffer)).first->second.as<float>();
  }

  /// The device copy of a KV layer (zeroed when first seen; from then on the only copy written).
  const resident_kv* cache(const kv_layer_view& c) {
    if (auto it = caches_.find(c.k); it != caches_.end()) return &it->second;
    error_.clear();
    cudaSetDevice(ordinal_);
    const std::size_t bytes = static_cast<std::size_t>(c.num_blocks * c.block_size * c.head_dim) * size_of(c.type);
    auto k = cu::device_buffer::allocate(bytes);
    auto v = k ? cu::device_buffer::allocate(bytes) : expected<cu::device_buffer>(k.err());
    if (!k || !v) {
      error_ = device_ + ": cannot allocate the KV layer: " + (k ? v.err().message() : k.err().message());
      return nullptr;
    }
    if (cudaMemset(k->data(), 0, bytes) != cudaSuccess || cudaMemset(v->data(), 0, bytes) != cudaSuccess) {
      (void)cudaGetLastError();
      error_ = device_ + ": cannot clear the KV layer";
      return nullptr;
    }
    return &caches_.emplace(c.k, resident_kv{std::move(*k), std::move(*v)}).first->second;
  }

  static cu::kv_cache_view device_view(const kv_layer_view& c, const resident_kv& kv) {
    return {c.type, kv.k.data(), kv.v.data(), c.num_blocks, c.block_size, c.head_dim};
  }

  /// Blocks per row of the device block table: enough for the farthest position.
  static std::int64_t table_width(const kv_layer_view& c, std::span<const kv_slot> slots) {
    std::int64_t width = 1;
    for (const kv_slot& s : slots) width = std::max<std::int64_t>(width, s.position / c.block_size + 1);
    return width;
  }

  /// One block-table row per token (seq_index[i] = i), its position, uploaded.
  cu::kv_token_slots upload_slots(const kv_layer_view& c, std::span<const kv_slot> slots, std::int64_t width) {
    const auto m = static_cast<std::int64_t>(slots.size());
    tables_.assign(static_cast<std::size_t>(m * width), 0);
    seq_.resize(static_cast<std::size_t>(m));
    positions_.resize(static_cast<std::size_t>(m));
    for (std::int64_t i = 0; i < m; ++i) {
      const kv_slot& s = slots[static_cast<std::size_t>(i)];
      const std::int64_t used = s.position / c.block_size + 1;
      std::copy(s.block_table, s.block_table + used, tables_.begin() + i * width);
      seq_[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i);
      positions_[static_cast<std::size_t>(i)] = s.position;
    }
    cu::kv_token_slots out;
    out.block_tables = upload(tables_.data(), m * width);
    out.max_blocks_per_seq = width;
    out.seq_index = upload(seq_.data(), m);
    out.positions = upload(positions_.data(), m);
    out.tokens = m;
    return out;
  }

  struct weight_key {
    const void* data;
    std::int64_t rows, cols;
    bool operator==(const weight_key&) const = default;
  };
  struct weight_key_hash {
    std::size_t operator()(const weight_key& k) const noexcept {
      return std::hash<const void*>()(k.data) ^ (static_cast<std::size_t>(k.rows) * 0x9E3779B97F4A7C15ull) ^
             static_cast<std::size_t>(k.cols);
    }
  };
  struct pending_download {
    void* host;
    const std::byte* staged;
    std::size_t bytes;
  };

  int ordinal_;
  std::string device_;
  cu::device_stream stream_;
  cu::device_buffer scratch_;
  pinned_buffer pinned_;
  std::size_t device_used_ = 0, pinned_used_ = 0;
  std::vector<pending_download> downloads_;
  std::vector<std::int32_t> tables_, seq_, positions_;
  std::unordered_map<weight_key, resident_weight, weight_key_hash> weights_;
  std::unordered_map<const float*, cu::device_buffer> vectors_;
  std::unordered_map<const void*, resident_kv> caches_;
  std::string error_;
  op_status failed_status_ = op_status::failed;
};

}  // namespace

namespace detail {

expected<void> probe_cuda(int ordinal, const std::string& device) {
  const cu::device_count_result census = cu::cuda_device_count();
  if (census.count == 0)
    return fail(errc::unavailable, "device ", device, ": no usable CUDA device (driver or GPU missing): ", census.reason);
  if (ordinal >= census.count)
    return fail(errc::unavailable, "device ", device, ": this machine has ", census.count, " CUDA device",
                census.count == 1 ? "" : "s", " (cuda:0", census.count > 1 ? "..cuda:" + std::to_string(census.count - 1) : "",
                ")");
  auto props = cu::query_device(ordinal);
  if (!props) return fail(props.err().code(), "device ", device, ": ", props.err().message());
  if (props->major < 8)
    return fail(errc::unsupported, "device ", device, " (", props->name, ") has compute capability ", props->major, ".",
                props->minor, "; afd's CUDA kernels need 8.0 or newer (bf16 tensor cores)");
  return {};
}

expected<std::unique_ptr<backend>> make_cuda_backend(int ordinal, const std::string& device) {
  if (auto ok = probe_cuda(ordinal, device); !ok) return std::move(ok).err();
  auto stream = cu::device_stream::create(ordinal);
  if (!stream) return fail(stream.err().code(), "device ", device, ": ", stream.err().message());
  return std::unique_ptr<backend>(std::make_unique<cuda_backend>(ordinal, device, std::move(*stream)));
}

int cuda_devices() noexcept { return cu::cuda_device_count().count; }

}  // namespace detail

}  // namespace afd::kernels
