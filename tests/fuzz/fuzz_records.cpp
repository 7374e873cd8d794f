// The JSON files a user or an earlier run hands the programs: the first byte picks the reader,
// the rest is the file. A run's config.json and deploy.json, a split file (by index or by folder
// name), a datasets table, the normalisation cache (which must never serve wrong statistics), a
// cac_train --config file (any part of a config.json), CIFAR-100's class-name file, and a
// cac_eval --unknown spec (the rest as the flag's text).
#include <cmath>
#include <filesystem>

#include "apps/run.h"
#include "apps/scoring.h"
#include "data/benchmarks.h"
#include "data/openset.h"
#include "data/readers.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string path = cac::fuzz::write_input("record.json", data + 1, size - 1);
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  using cac::fuzz::expect_success_or_clean_error;
  switch (data[0] % 9) {
    case 0: expect_success_or_clean_error(path, [&] { cac::app::RunConfig::from_json(text, path); }); break;
    case 1: expect_success_or_clean_error(path, [&] { cac::app::Deployment::from_json(text, path); }); break;
    case 2:
      expect_success_or_clean_error(path, [&] {
        const cac::data::Trial t = cac::data::read_trial_json(path);
        if (t.known.size() < 2) std::abort();
      });
      break;
    case 3:
      expect_success_or_clean_error(path, [&] {
        const std::vector<std::string> names = {"cat", "dog", "car"};
        const cac::data::Trial t = cac::data::read_trial_json(path, &names);
        for (int64_t c : t.known)
          if (c < 0 || c > 2) std::abort();
      });
      break;
    case 4: expect_success_or_clean_error(path, [&] { cac::data::dataset_defaults("CIFAR10", path); }); break;
    case 5: {
      // Never throws: a corrupt cache only costs the recomputation. What it returns must be usable.
      const cac::data::Normalisation n = cac::data::cached_normalisation(cac::fuzz::normalisation_subset(), "fuzz", path);
      if (n.mean.size() != 3 || n.std.size() != 3) std::abort();
      for (int c = 0; c < 3; ++c)
        if (!std::isfinite(n.mean[size_t(c)]) || !(n.std[size_t(c)] > 0) || !std::isfinite(n.std[size_t(c)])) std::abort();
      break;
    }
    case 6:
      expect_success_or_clean_error(path, [&] {
        cac::app::RunConfig c;
        c.overlay_json(text, path, {"out"});
        c.check(path);
      });
      break;
    case 7: {
      std::filesystem::create_directories(cac::fuzz::scratch_dir() / "c100");
      const std::string names = cac::fuzz::write_input("c100/fine_label_names.txt", data + 1, size - 1);
      expect_success_or_clean_error(names, [&] {
        const std::vector<std::string> n = cac::data::read_cifar100_fine_names((cac::fuzz::scratch_dir() / "c100").string());
        if (n.size() != 100) std::abort();
      });
      break;
    }
    case 8:
      try {  // a flag's text, not a file: the error names the spec itself
        const cac::data::UnknownSource u = cac::data::parse_unknown_source(text);
        if (u.name.empty() || u.name.find_first_of(",\"\n\r") != std::string::npos || u.path.empty()) std::abort();
      } catch (const cac::Error&) {
      }
      break;
  }
  return 0;
}
