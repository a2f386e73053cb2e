// The tiny UNet2DConditionModel config the tests build models from (2 → 2 channels, blocks 8/16, 2 heads).
#pragma once
#include <nlohmann/json.hpp>

namespace lcd::testing {

inline nlohmann::json tiny_unet_config(int64_t cross_attention_dim = 6) {
  return {{"down_block_types", {"CrossAttnDownBlock2D", "DownBlock2D"}},
          {"up_block_types", {"UpBlock2D", "CrossAttnUpBlock2D"}},
          {"block_out_channels", {8, 16}},
          {"layers_per_block", 1},
          {"attention_head_dim", 2},
          {"cross_attention_dim", cross_attention_dim},
          {"norm_num_groups", 4},
          {"in_channels", 2},
          {"out_channels", 2}};
}

}  // namespace lcd::testing
