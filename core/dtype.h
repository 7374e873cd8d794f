#pragma once
// Element types and devices of tensors, with their names and sizes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace cac {

// float32 for activations and parameters, float64 for the CPU reference/gradient checks,
// int64 for labels, uint8 for raw images, bfloat16 (core/bf16.h) for mixed precision (issue 25).
enum class DType : uint8_t { F32, F64, I64, U8, BF16 };
enum class Device : uint8_t { CPU, CUDA };

using Shape = std::vector<int64_t>;

size_t dtype_size(DType t);
const char* dtype_name(DType t);
const char* device_name(Device d);
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);
// The bytes a tensor of this shape holds; false when a dimension is negative or the size does not
// fit in int64 (a shape read from a file can be anything: its size must not wrap around).
bool shape_nbytes(const Shape& s, DType t, int64_t* bytes);

template <class T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::F32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::F64; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::I64; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::U8; };
struct bf16;
template <> struct DTypeOf<bf16> { static constexpr DType value = DType::BF16; };

}  // namespace cac
