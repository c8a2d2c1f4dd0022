// fastsd._C: the multi-coil 2-D MRI operators as cuFFT plans with LTO callbacks.
//
// Ops (namespace fastsd_native, CUDA only; same semantics as fastsd.reference.mri for 2-D data,
// contiguous tensors; the Python wrapper fastsd/_native.py normalises the arguments):
//   mri_forward(x, mask, smaps)      = M fft2c(S x)                 one FFT
//   mri_adjoint(y, mask, smaps)      = sum_c conj(S_c) ifft2c(M y_c) one inverse FFT
//   mri_normal(x, mask, smaps)       = A^H A x                      FFT + inverse FFT
//   mri_fidelity(x, y, mask, smaps)  = (|M(FSx - y)|^2, 2 A^H(Ax-y)) FFT + inverse FFT
//   mri_dc(x, y, mask, smaps, lam)   coil-wise data consistency     FFT + inverse FFT
// All elementwise work runs inside the FFT kernels (callbacks.inc): the load of the forward
// transform packs the 2-channel image and multiplies by the coil map, its store applies the mask
// and forms the centred output, the residual with its loss partial sums or the data-consistency
// blend; the inverse transform loads M y (adjoint) and its store does the conjugate coil combine
// and unpacks into the image. The centring shifts are index arithmetic, valid for odd sizes.
//
// Callbacks are compiled with NVRTC to LTO-IR at plan creation (once per shape, variant and
// callback; one callback per blob): the IR then matches the running GPU and the cuFFT /
// nvJitLink that link it, and shape constants are folded in. Plans are cached per (device, shape,
// variant) and run on the current stream with a workspace from torch's caching allocator, and a
// device-side argument block (caller info) written by a one-thread kernel before each execution,
// so a CUDA graph that captures the op replays with the captured tensors. That block makes a plan
// unfit to run on two streams at once; sequential use from several streams, ordered as torch
// orders them (graph capture synchronises first), is fine. Creating a plan while the stream is
// being captured is refused with a message: run the op once before capture.
//
// callback_ltoir_size(defines, arch) compiles the callbacks without touching the GPU (a check
// that works on machines with no GPU); native_info() names the cuFFT and NVRTC in use.

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <Python.h>
#include <cuda_runtime.h>
#include <cufftXt.h>
#include <nvrtc.h>

#include <cmath>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#if !defined(CUFFT_VERSION) || CUFFT_VERSION < 12000
#error "fastsd._C needs cuFFT >= 12.0 (CUDA 13): cufftXtSetJITCallback with a symbol name"
#endif

namespace {

const char kCallbackSource[] =
#include "callbacks.inc"
    ;

// Host mirror of FsdParams in callbacks.inc (same member order and types).
struct FsdParams {
    const void* x;
    const float2* smaps;
    const float* mask;
    const float2* y;
    float2* out;
    float* img;
    float* loss;
    float w;
    float scale;
};

constexpr int64_t kLossSlots = 256;  // NSLOT_ in callbacks.inc

enum StoreMode { kForward = 0, kResidual = 1, kDc = 2 };

const char* cufft_error_name(cufftResult r) {
    switch (r) {
        case CUFFT_INVALID_PLAN: return "CUFFT_INVALID_PLAN";
        case CUFFT_ALLOC_FAILED: return "CUFFT_ALLOC_FAILED";
        case CUFFT_INVALID_TYPE: return "CUFFT_INVALID_TYPE";
        case CUFFT_INVALID_VALUE: return "CUFFT_INVALID_VALUE";
        case CUFFT_INTERNAL_ERROR: return "CUFFT_INTERNAL_ERROR";
        case CUFFT_EXEC_FAILED: return "CUFFT_EXEC_FAILED";
        case CUFFT_SETUP_FAILED: return "CUFFT_SETUP_FAILED";
        case CUFFT_INVALID_SIZE: return "CUFFT_INVALID_SIZE";
        case CUFFT_UNALIGNED_DATA: return "CUFFT_UNALIGNED_DATA";
        case CUFFT_INVALID_DEVICE: return "CUFFT_INVALID_DEVICE";
        case CUFFT_NO_WORKSPACE: return "CUFFT_NO_WORKSPACE";
        case CUFFT_NOT_IMPLEMENTED: return "CUFFT_NOT_IMPLEMENTED";
        case CUFFT_NOT_SUPPORTED: return "CUFFT_NOT_SUPPORTED";
        case CUFFT_MISSING_DEPENDENCY: return "CUFFT_MISSING_DEPENDENCY";
        case CUFFT_NVRTC_FAILURE: return "CUFFT_NVRTC_FAILURE";
        case CUFFT_NVJITLINK_FAILURE: return "CUFFT_NVJITLINK_FAILURE";
        case CUFFT_NVSHMEM_FAILURE: return "CUFFT_NVSHMEM_FAILURE";
        default: return "unknown cufftResult";
    }
}

#define FSD_CUFFT(expr)                                                                   \
    do {                                                                                  \
        cufftResult r_ = (expr);                                                          \
        TORCH_CHECK(r_ == CUFFT_SUCCESS, "fastsd._C: ", #expr, " failed: ",              \
                    cufft_error_name(r_), " (", static_cast<int>(r_), ")");               \
    } while (0)

#define FSD_NVRTC(expr)                                                                  \
    do {                                                                                 \
        nvrtcResult r_ = (expr);                                                         \
        TORCH_CHECK(r_ == NVRTC_SUCCESS, "fastsd._C: ", #expr, " failed: ",             \
                    nvrtcGetErrorString(r_));                                            \
    } while (0)

// LTO-IR of the callbacks for one set of defines and one architecture (e.g. 90).
std::vector<char> compile_callbacks(const std::string& defines, int arch) {
    std::string src = defines + kCallbackSource;
    nvrtcProgram prog;
    FSD_NVRTC(nvrtcCreateProgram(&prog, src.c_str(), "fastsd_mri_callbacks.cu", 0, nullptr, nullptr));
    std::string arch_flag = "-arch=compute_" + std::to_string(arch);
    const char* opts[] = {arch_flag.c_str(), "-dlto", "--relocatable-device-code=true", "--std=c++17"};
    nvrtcResult res = nvrtcCompileProgram(prog, 4, opts);
    if (res != NVRTC_SUCCESS) {
        size_t n = 0;
        nvrtcGetProgramLogSize(prog, &n);
        std::string log(n, '\0');
        nvrtcGetProgramLog(prog, &log[0]);
        nvrtcDestroyProgram(&prog);
        TORCH_CHECK(false, "fastsd._C: NVRTC could not compile the cuFFT callbacks:\n", log);
    }
    size_t size = 0;
    FSD_NVRTC(nvrtcGetLTOIRSize(prog, &size));
    std::vector<char> ir(size);
    FSD_NVRTC(nvrtcGetLTOIR(prog, ir.data()));
    nvrtcDestroyProgram(&prog);
    return ir;
}

// The variant of a plan: the defines of callbacks.inc plus which callbacks it links.
struct Variant {
    int64_t H, W, C;
    bool has_smaps, smaps_batched, mask_batched, has_y;
    int x_dtype;  // 0 float32, 1 float16, 2 bfloat16
    int mode;     // StoreMode (forward plans)
    bool inverse, load_masked;

    std::string defines() const {
        std::ostringstream s;
        s << "#define H_ " << H << "\n#define W_ " << W << "\n#define C_ " << C << "\n#define HAS_SMAPS "
          << has_smaps << "\n#define SMAPS_BATCHED " << smaps_batched << "\n#define MASK_BATCHED "
          << mask_batched << "\n#define HAS_Y " << has_y << "\n#define X_DTYPE " << x_dtype
          << "\n#define MODE " << mode << "\n#define ACCUMULATE " << (C > 1) << "\n";
        return s.str();
    }
};

struct Plan {
    cufftHandle handle = 0;
    FsdParams* params = nullptr;  // device memory, the plan's caller info
    size_t work_size = 0;         // workspace, taken from torch's allocator at each execution
    std::mutex mutex;             // held from cufftSetStream to cufftXtExec (host-side plan state)
};

__global__ void write_params(FsdParams* dst, FsdParams value) { *dst = value; }

std::mutex g_mutex;
std::unordered_map<std::string, std::unique_ptr<Plan>> g_plans;
std::unordered_map<std::string, std::vector<char>> g_ir;  // LTO-IR per (arch, callback, defines)

int device_arch(int device) {
    cudaDeviceProp prop;
    C10_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    return prop.major * 10 + prop.minor;
}

// The cached plan for (device, batch, variant), created on first use (outside graph capture).
Plan& get_plan(const Variant& v, int64_t batch, cudaStream_t stream, int device) {
    std::string defines = v.defines();
    std::ostringstream key;
    key << device << "|" << batch << "|" << v.inverse << v.load_masked << "|" << defines;
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_plans.find(key.str());
    if (it != g_plans.end()) return *it->second;

    cudaStreamCaptureStatus capture;
    C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
    TORCH_CHECK(capture == cudaStreamCaptureStatusNone,
                "fastsd._C: no cuFFT plan yet for this MRI shape; run the op once before CUDA graph capture");

    // One LTO-IR blob per callback (FSD_ONLY in callbacks.inc): no symbol is defined twice when a
    // plan links a load and a store callback.
    int arch = device_arch(device);
    auto ir_for = [&](const std::string& symbol) -> const std::vector<char>& {
        std::string only = "#define FSD_ONLY 1\n#define FSD_ONLY_" + symbol + " 1\n" + defines;
        std::string ir_key = std::to_string(arch) + "|" + only;
        auto it = g_ir.find(ir_key);
        if (it == g_ir.end()) it = g_ir.emplace(ir_key, compile_callbacks(only, arch)).first;
        return it->second;
    };

    auto plan = std::make_unique<Plan>();
    C10_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&plan->params), sizeof(FsdParams)));
    FSD_CUFFT(cufftCreate(&plan->handle));
    void* info = plan->params;
    const char* load = v.inverse ? (v.load_masked ? "fsd_load_masked" : nullptr) : "fsd_load_image";
    const char* store = v.inverse ? "fsd_store_image" : "fsd_store_kspace";
    if (load != nullptr) {
        const std::vector<char>& ir = ir_for(load);
        FSD_CUFFT(cufftXtSetJITCallback(plan->handle, load, ir.data(), ir.size(), CUFFT_CB_LD_COMPLEX, &info));
    }
    const std::vector<char>& ir = ir_for(store);
    FSD_CUFFT(cufftXtSetJITCallback(plan->handle, store, ir.data(), ir.size(), CUFFT_CB_ST_COMPLEX, &info));
    FSD_CUFFT(cufftSetAutoAllocation(plan->handle, 0));
    long long n[2] = {v.H, v.W};
    FSD_CUFFT(cufftXtMakePlanMany(plan->handle, 2, n, nullptr, 1, v.H * v.W, CUDA_C_32F, nullptr, 1, v.H * v.W,
                                  CUDA_C_32F, batch, &plan->work_size, CUDA_C_32F));
    return *g_plans.emplace(key.str(), std::move(plan)).first->second;
}

// Write the arguments and run the plan in place on `buffer` (complex64, B*C transforms).
void execute(Plan& plan, const FsdParams& args, at::Tensor& buffer, bool inverse, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(plan.mutex);
    FSD_CUFFT(cufftSetStream(plan.handle, stream));
    at::Tensor work;  // stream-ordered and capture-aware, like torch's own FFT workspace
    if (plan.work_size > 0) {
        work = at::empty({static_cast<int64_t>(plan.work_size)}, buffer.options().dtype(at::kByte));
        FSD_CUFFT(cufftSetWorkArea(plan.handle, work.data_ptr()));
    }
    write_params<<<1, 1, 0, stream>>>(plan.params, args);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    void* data = buffer.data_ptr();
    FSD_CUFFT(cufftXtExec(plan.handle, data, data, inverse ? CUFFT_INVERSE : CUFFT_FORWARD));
}

// ---------------------------------------------------------------------------------------------
// argument checks (the Python wrapper has validated semantics; these guard the raw pointers)

int x_dtype_code(const at::Tensor& x) {
    switch (x.scalar_type()) {
        case at::kFloat: return 0;
        case at::kHalf: return 1;
        case at::kBFloat16: return 2;
        default: TORCH_CHECK(false, "fastsd._C: x must be float32, float16 or bfloat16, got ", x.scalar_type());
    }
}

struct Problem {
    int64_t B, C, H, W;
    Variant v;
};

Problem describe(const at::Tensor& ref, bool image, const at::Tensor& mask, const c10::optional<at::Tensor>& smaps) {
    TORCH_CHECK(ref.is_cuda() && ref.dim() == 4 && ref.is_contiguous(), "fastsd._C: expected a contiguous CUDA ",
                image ? "image (B,2,H,W)" : "k-space (B,C,H,W)", ", got shape ", ref.sizes());
    Problem P;
    P.B = ref.size(0);
    P.H = ref.size(2);
    P.W = ref.size(3);
    P.C = 1;
    Variant& v = P.v;
    v = Variant{P.H, P.W, 1, false, false, false, false, 0, 0, false, false};
    if (smaps.has_value()) {
        const at::Tensor& s = *smaps;
        TORCH_CHECK(s.is_cuda() && s.scalar_type() == at::kComplexFloat && s.is_contiguous() &&
                        (s.dim() == 3 || (s.dim() == 4 && s.size(0) == P.B)) && s.size(-2) == P.H &&
                        s.size(-1) == P.W,
                    "fastsd._C: smaps must be contiguous complex64 (C,H,W) or (B,C,H,W), got ", s.sizes());
        P.C = s.size(-3);
        v.has_smaps = true;
        v.smaps_batched = s.dim() == 4;
    }
    v.C = P.C;
    TORCH_CHECK(mask.is_cuda() && mask.scalar_type() == at::kFloat && mask.is_contiguous() &&
                    (mask.dim() == 2 || (mask.dim() == 3 && mask.size(0) == P.B)) && mask.size(-2) == P.H &&
                    mask.size(-1) == P.W,
                "fastsd._C: mask must be contiguous float32 (H,W) or (B,H,W), got ", mask.sizes());
    v.mask_batched = mask.dim() == 3;
    if (image) {
        TORCH_CHECK(ref.size(1) == 2, "fastsd._C: x must have 2 channels, got ", ref.sizes());
        v.x_dtype = x_dtype_code(ref);
    } else {
        TORCH_CHECK(ref.scalar_type() == at::kComplexFloat && ref.size(1) == P.C,
                    "fastsd._C: y must be complex64 with ", P.C, " coils, got ", ref.sizes());
    }
    return P;
}

void check_y(const at::Tensor& y, const Problem& P) {
    TORCH_CHECK(y.is_cuda() && y.scalar_type() == at::kComplexFloat && y.is_contiguous() &&
                    y.sizes() == at::IntArrayRef({P.B, P.C, P.H, P.W}),
                "fastsd._C: y must be contiguous complex64 of shape (", P.B, ",", P.C, ",", P.H, ",", P.W,
                "), got ", y.sizes());
}

FsdParams base_args(const Problem& P, const at::Tensor* x, const at::Tensor& mask,
                    const c10::optional<at::Tensor>& smaps) {
    FsdParams a{};
    a.x = x != nullptr ? x->data_ptr() : nullptr;
    a.smaps = smaps.has_value() ? reinterpret_cast<const float2*>(smaps->data_ptr()) : nullptr;
    a.mask = mask.data_ptr<float>();
    a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(P.H * P.W)));
    return a;
}

// Forward transform of S x into `buffer` with the given store mode (in place on buffer).
void forward_pass(const Problem& P, FsdParams args, int mode, bool has_y, at::Tensor& buffer, cudaStream_t stream,
                  int device) {
    Variant v = P.v;
    v.mode = mode;
    v.has_y = has_y;
    execute(get_plan(v, P.B * P.C, stream, device), args, buffer, false, stream);
}

// Inverse transform of `buffer` (or of M y with load_masked) combined into an fp32 image.
at::Tensor inverse_pass(const Problem& P, FsdParams args, bool load_masked, double scale, at::Tensor& buffer,
                        cudaStream_t stream, int device) {
    auto opts = buffer.options().dtype(at::kFloat);
    at::Tensor img = P.C > 1 ? at::zeros({P.B, 2, P.H, P.W}, opts) : at::empty({P.B, 2, P.H, P.W}, opts);
    Variant v = P.v;
    v.inverse = true;
    v.load_masked = load_masked;
    v.has_y = load_masked;
    v.mask_batched = load_masked && v.mask_batched;  // the inverse store reads no mask
    v.x_dtype = 0;
    v.mode = 0;
    args.img = img.data_ptr<float>();
    args.scale = static_cast<float>(scale / std::sqrt(static_cast<double>(P.H * P.W)));
    execute(get_plan(v, P.B * P.C, stream, device), args, buffer, true, stream);
    return img;
}

at::Tensor new_kspace(const Problem& P, const at::Tensor& like) {
    return at::empty({P.B, P.C, P.H, P.W}, like.options().dtype(at::kComplexFloat));
}

// ---------------------------------------------------------------------------------------------
// ops

at::Tensor mri_forward(const at::Tensor& x, const at::Tensor& mask, const c10::optional<at::Tensor>& smaps) {
    c10::cuda::CUDAGuard guard(x.device());
    Problem P = describe(x, true, mask, smaps);
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    at::Tensor out = new_kspace(P, x), scratch = new_kspace(P, x);
    FsdParams args = base_args(P, &x, mask, smaps);
    args.out = reinterpret_cast<float2*>(out.data_ptr());
    forward_pass(P, args, kForward, false, scratch, stream, x.get_device());
    return out;
}

at::Tensor mri_adjoint(const at::Tensor& y, const at::Tensor& mask, const c10::optional<at::Tensor>& smaps) {
    c10::cuda::CUDAGuard guard(y.device());
    Problem P = describe(y, false, mask, smaps);
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    at::Tensor scratch = new_kspace(P, y);
    FsdParams args = base_args(P, nullptr, mask, smaps);
    args.y = reinterpret_cast<const float2*>(y.data_ptr());
    return inverse_pass(P, args, true, 1.0, scratch, stream, y.get_device());
}

// Forward pass with `mode`, then the inverse pass; the image comes back in x's dtype.
at::Tensor round_trip(const at::Tensor& x, const c10::optional<at::Tensor>& y, const at::Tensor& mask,
                      const c10::optional<at::Tensor>& smaps, int mode, double w, double scale, at::Tensor* loss) {
    c10::cuda::CUDAGuard guard(x.device());
    Problem P = describe(x, true, mask, smaps);
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    at::Tensor buffer = new_kspace(P, x);
    FsdParams args = base_args(P, &x, mask, smaps);
    args.w = static_cast<float>(w);
    if (y.has_value()) {
        check_y(*y, P);
        args.y = reinterpret_cast<const float2*>(y->data_ptr());
    }
    at::Tensor parts;
    if (loss != nullptr) {
        parts = at::zeros({P.B, kLossSlots}, x.options().dtype(at::kFloat));
        args.loss = parts.data_ptr<float>();
    }
    forward_pass(P, args, mode, y.has_value(), buffer, stream, x.get_device());
    at::Tensor img = inverse_pass(P, args, false, scale, buffer, stream, x.get_device());
    if (loss != nullptr) *loss = parts.sum(1);
    return img.scalar_type() == x.scalar_type() ? img : img.to(x.scalar_type());
}

at::Tensor mri_normal(const at::Tensor& x, const at::Tensor& mask, const c10::optional<at::Tensor>& smaps) {
    return round_trip(x, c10::nullopt, mask, smaps, kResidual, 0.0, 1.0, nullptr);
}

std::tuple<at::Tensor, at::Tensor> mri_fidelity(const at::Tensor& x, const at::Tensor& y, const at::Tensor& mask,
                                                const c10::optional<at::Tensor>& smaps) {
    at::Tensor loss;
    at::Tensor grad = round_trip(x, y, mask, smaps, kResidual, 0.0, 2.0, &loss);
    return {loss, grad};
}

at::Tensor mri_dc(const at::Tensor& x, const at::Tensor& y, const at::Tensor& mask,
                  const c10::optional<at::Tensor>& smaps, double lam) {
    TORCH_CHECK(lam >= 0, "fastsd._C: lam must be >= 0, got ", lam);
    double w = std::isinf(lam) ? 1.0 : lam / (1.0 + lam);
    return round_trip(x, y, mask, smaps, kDc, w, 1.0, nullptr);
}

int64_t callback_ltoir_size(const std::string& defines, int64_t arch) {
    return static_cast<int64_t>(compile_callbacks(defines, static_cast<int>(arch)).size());
}

std::string native_info() {
    int cufft = 0, major = 0, minor = 0;
    std::ostringstream s;
    s << "cuFFT " << (cufftGetVersion(&cufft) == CUFFT_SUCCESS ? std::to_string(cufft) : "?") << " (built against "
      << CUFFT_VERSION << "), NVRTC ";
    if (nvrtcVersion(&major, &minor) == NVRTC_SUCCESS) s << major << "." << minor;
    return s.str();
}

int64_t plan_count() {
    std::lock_guard<std::mutex> lock(g_mutex);
    return static_cast<int64_t>(g_plans.size());
}

}  // namespace

TORCH_LIBRARY(fastsd_native, m) {
    m.def("mri_forward(Tensor x, Tensor mask, Tensor? smaps) -> Tensor");
    m.def("mri_adjoint(Tensor y, Tensor mask, Tensor? smaps) -> Tensor");
    m.def("mri_normal(Tensor x, Tensor mask, Tensor? smaps) -> Tensor");
    m.def("mri_fidelity(Tensor x, Tensor y, Tensor mask, Tensor? smaps) -> (Tensor, Tensor)");
    m.def("mri_dc(Tensor x, Tensor y, Tensor mask, Tensor? smaps, float lam) -> Tensor");
    m.def("callback_ltoir_size(str defines, int arch) -> int", &callback_ltoir_size);
    m.def("plan_count() -> int", &plan_count);
    m.def("native_info() -> str", &native_info);
}

TORCH_LIBRARY_IMPL(fastsd_native, CUDA, m) {
    m.impl("mri_forward", &mri_forward);
    m.impl("mri_adjoint", &mri_adjoint);
    m.impl("mri_normal", &mri_normal);
    m.impl("mri_fidelity", &mri_fidelity);
    m.impl("mri_dc", &mri_dc);
}

// A plain Python module: importing fastsd._C registers the ops above with torch.
static PyModuleDef fastsd_c_module = {PyModuleDef_HEAD_INIT, "_C", "fastsd native CUDA ops (torch.ops.fastsd_native)",
                                      -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&fastsd_c_module); }
