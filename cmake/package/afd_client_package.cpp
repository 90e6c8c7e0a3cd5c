// The translation unit of the installed libafd_client.so. The library is the static afd libraries
// linked into one shared object; the references below make the linker keep the whole public API
// (client.hpp and error.hpp: the entry points; the rest is reached through the cluster's vtable).
#include <afd/client.hpp>

namespace afd::client::detail {

/// Addresses of the public functions, so that none is left out of the shared library (external
/// linkage: a const object would be internal, unused, and dropped with its references).
extern void* const package_entry_points[];
void* const package_entry_points[] = {
    reinterpret_cast<void*>(&cluster::embed),
    reinterpret_cast<void*>(static_cast<expected<std::unique_ptr<cluster>> (*)(
                                const std::string&, std::uint16_t, std::chrono::milliseconds)>(&cluster::connect)),
    reinterpret_cast<void*>(static_cast<expected<std::unique_ptr<cluster>> (*)(
                                const std::string&, std::uint16_t, std::chrono::milliseconds, const std::string&)>(
        &cluster::connect)),
    reinterpret_cast<void*>(
        static_cast<expected<std::unique_ptr<cluster>> (*)(const std::string&, std::chrono::milliseconds)>(
            &cluster::connect)),
    reinterpret_cast<void*>(static_cast<const char* (*)(errc) noexcept>(&afd::to_string)),
};
extern std::string (afd::error::*const package_error_to_string)() const;
std::string (afd::error::*const package_error_to_string)() const = &afd::error::to_string;

}  // namespace afd::client::detail
