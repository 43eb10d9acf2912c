"""Export small Hugging Face ``transformers`` models (random weights, built from configs: nothing is
downloaded) with both PyTorch exporters, for ``probe_folder.py`` to prune and check.

These are the models users most often export to ONNX, written by the library's own modelling code with
its habits (attention masks built at run time, position ids, tied embeddings, shared ALBERT layers,
BLOOM's ALiBi, DeBERTa's relative attention). ``transformers`` installs beside PyTorch in an environment
of its own::

    python -m venv --system-site-packages /tmp/hfenv && /tmp/hfenv/bin/pip install transformers
    /tmp/hfenv/bin/python tools/probe_transformers.py /tmp/hf [names...]
    python tools/probe_folder.py /tmp/hf

Each model takes one input (token ids [N, 12], images [N, 3, 32, 32], audio or features) with a
symbolic batch size, and gives one output (logits or the last hidden state). ``PROBE_OPSET`` sets the dynamo
export's opset (18 by default; from 23 ``scaled_dot_product_attention`` becomes ONNX's Attention).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import torch
import transformers as hf
from torch import nn

TOKENS = 12
SMALL_TEXT = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=64)
SMALL_VISION = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, num_channels=3)

# wav2vec 2.0's family: a feature encoder of two 1-D convs, then a small transformer.
SMALL_SPEECH = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, conv_dim=(16, 16),
                    conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4)


SMALL_T5 = dict(vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
SMALL_SEQ2SEQ = dict(vocab_size=128, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                     decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)


def small_detr() -> dict:
    """A small DETR-like config: a ResNet backbone of four stages, one encoder and one decoder layer."""
    return dict(backbone_config=hf.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 32, 32], depths=[1, 1, 1, 1],
                                                out_features=["stage4"]),
                d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
                encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=5, num_labels=3)


def small_rt_detr(decoder_layers: int = 1) -> dict:
    """A small RT-DETR config: a ResNet backbone whose last three stages feed the hybrid encoder."""
    return dict(backbone_config=hf.RTDetrResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 32, 32],
                                                      depths=[1, 1, 1, 1], out_features=["stage2", "stage3", "stage4"]),
                encoder_in_channels=[32, 32, 32], encoder_hidden_dim=32, encoder_ffn_dim=64, encoder_attention_heads=4,
                d_model=32, num_queries=10, decoder_layers=decoder_layers, decoder_ffn_dim=64, decoder_attention_heads=4,
                decoder_n_points=2, decoder_in_channels=[32, 32, 32], num_labels=3)


def text(config_class, model_class, **changes):
    """A builder of ``model_class`` with a small text config (``changes`` on top: grouped key/value heads...)."""
    return lambda: model_class(config_class(**{**SMALL_TEXT, **changes}))


MODELS = {
    "bert": text(hf.BertConfig, hf.BertForSequenceClassification),
    "roberta": text(hf.RobertaConfig, hf.RobertaForSequenceClassification, pad_token_id=1),
    "distilbert": lambda: hf.DistilBertForSequenceClassification(hf.DistilBertConfig(
        vocab_size=128, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64)),
    "albert": text(hf.AlbertConfig, hf.AlbertForSequenceClassification, embedding_size=16),
    "electra": text(hf.ElectraConfig, hf.ElectraForSequenceClassification, embedding_size=16),
    "deberta_v2": text(hf.DebertaV2Config, hf.DebertaV2ForSequenceClassification, relative_attention=True,
                       pos_att_type=["p2c", "c2p"], max_relative_positions=16),
    "gpt2": lambda: hf.GPT2LMHeadModel(hf.GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64)),
    "llama": text(hf.LlamaConfig, hf.LlamaForCausalLM, num_key_value_heads=2),
    "qwen2": text(hf.Qwen2Config, hf.Qwen2ForCausalLM, num_key_value_heads=2),
    "mistral": text(hf.MistralConfig, hf.MistralForCausalLM, num_key_value_heads=2),
    "gemma": text(hf.GemmaConfig, hf.GemmaForCausalLM, num_key_value_heads=2, head_dim=8),
    "phi": text(hf.PhiConfig, hf.PhiForCausalLM),
    "gpt_neox": text(hf.GPTNeoXConfig, hf.GPTNeoXForCausalLM),
    "opt": lambda: hf.OPTForCausalLM(hf.OPTConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2,
                                                  num_attention_heads=4, ffn_dim=64, max_position_embeddings=64,
                                                  word_embed_proj_dim=32)),
    "bloom": lambda: hf.BloomForCausalLM(hf.BloomConfig(vocab_size=128, hidden_size=32, n_layer=2, n_head=4)),
    "t5_encoder": lambda: hf.T5EncoderModel(hf.T5Config(**SMALL_T5)),
    "vit": lambda: hf.ViTForImageClassification(hf.ViTConfig(**SMALL_VISION, num_labels=10)),
    "deit": lambda: hf.DeiTForImageClassification(hf.DeiTConfig(**SMALL_VISION, num_labels=10)),
    "beit": lambda: hf.BeitForImageClassification(hf.BeitConfig(**SMALL_VISION, num_labels=10,
                                                                 use_relative_position_bias=True)),
    "dinov2": lambda: hf.Dinov2Model(hf.Dinov2Config(**{**SMALL_VISION, "patch_size": 4}, mlp_ratio=2)),
    "swin": lambda: hf.SwinForImageClassification(hf.SwinConfig(image_size=32, patch_size=2, embed_dim=16,
                                                                depths=[1, 1], num_heads=[2, 4], window_size=4,
                                                                num_labels=10)),
    "convnext": lambda: hf.ConvNextForImageClassification(hf.ConvNextConfig(num_stages=2, hidden_sizes=[16, 32],
                                                                            depths=[1, 1],
                                                                            num_labels=10)),
    "resnet": lambda: hf.ResNetForImageClassification(hf.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32],
                                                                      depths=[1, 1], layer_type="bottleneck",
                                                                      num_labels=10)),
    "mobilevit": lambda: hf.MobileViTForImageClassification(hf.MobileViTConfig(
        image_size=32, hidden_sizes=[32, 40, 48], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64], num_labels=10)),
    "segformer": lambda: hf.SegformerForSemanticSegmentation(hf.SegformerConfig(
        hidden_sizes=[16, 32], depths=[1, 1], num_encoder_blocks=2, sr_ratios=[2, 1], num_attention_heads=[1, 2],
        patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2], decoder_hidden_size=32, num_labels=5)),
    "clip_vision": lambda: hf.CLIPVisionModelWithProjection(hf.CLIPVisionConfig(**SMALL_VISION, projection_dim=16)),
    "whisper_encoder": lambda: hf.WhisperForAudioClassification(hf.WhisperConfig(
        num_mel_bins=16, d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
        max_source_positions=10, num_labels=5)),
    "wav2vec2": lambda: hf.Wav2Vec2ForSequenceClassification(hf.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, num_labels=5)),
    "phi3": text(hf.Phi3Config, hf.Phi3ForCausalLM, num_key_value_heads=2, pad_token_id=0),
    "qwen3": text(hf.Qwen3Config, hf.Qwen3ForCausalLM, num_key_value_heads=2, head_dim=8),
    "gemma2": text(hf.Gemma2Config, hf.Gemma2ForCausalLM, num_key_value_heads=2, head_dim=8),
    "stablelm": text(hf.StableLmConfig, hf.StableLmForCausalLM, num_key_value_heads=2),
    "olmo": text(hf.OlmoConfig, hf.OlmoForCausalLM, pad_token_id=0),
    "falcon": lambda: hf.FalconForCausalLM(hf.FalconConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2,
                                                           num_attention_heads=4, new_decoder_architecture=True,
                                                           num_kv_heads=2)),
    "gptj": lambda: hf.GPTJForCausalLM(hf.GPTJConfig(vocab_size=128, n_embd=32, n_layer=2, n_head=4, rotary_dim=4,
                                                     n_positions=64)),
    "codegen": lambda: hf.CodeGenForCausalLM(hf.CodeGenConfig(vocab_size=128, n_embd=32, n_layer=2, n_head=4,
                                                              rotary_dim=4, n_positions=64, n_ctx=64)),
    "mixtral": text(hf.MixtralConfig, hf.MixtralForCausalLM, num_key_value_heads=2, num_local_experts=4,
                       num_experts_per_tok=2),
    "mamba": lambda: hf.MambaForCausalLM(hf.MambaConfig(vocab_size=128, hidden_size=32, state_size=8,
                                                        num_hidden_layers=2, expand=2, conv_kernel=4)),
    "mpnet": text(hf.MPNetConfig, hf.MPNetForSequenceClassification),
    "bart_encoder": lambda: hf.BartModel(hf.BartConfig(vocab_size=128, d_model=32, encoder_layers=2, decoder_layers=1,
                                                       encoder_attention_heads=4, decoder_attention_heads=4,
                                                       encoder_ffn_dim=64, decoder_ffn_dim=64,
                                                       max_position_embeddings=64)).get_encoder(),
    "clip_text": lambda: hf.CLIPTextModelWithProjection(hf.CLIPTextConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, projection_dim=16)),
    "yolos": lambda: hf.YolosForObjectDetection(hf.YolosConfig(**{**SMALL_VISION, "image_size": [32, 32]},
                                                                         num_detection_tokens=4, num_labels=5)),
    "swinv2": lambda: hf.Swinv2ForImageClassification(hf.Swinv2Config(image_size=32, patch_size=2, embed_dim=16,
                                                                      depths=[1, 1], num_heads=[2, 4], window_size=4,
                                                                      num_labels=10)),
    "convnextv2": lambda: hf.ConvNextV2ForImageClassification(hf.ConvNextV2Config(
        num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], num_labels=10)),
    "efficientnet": lambda: hf.EfficientNetForImageClassification(hf.EfficientNetConfig(
        image_size=32, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320, num_labels=10)),
    "regnet": lambda: hf.RegNetForImageClassification(hf.RegNetConfig(embedding_size=16, hidden_sizes=[16, 32],
                                                                      depths=[1, 1], groups_width=8, num_labels=10)),
    "mobilenet_v2": lambda: hf.MobileNetV2ForImageClassification(hf.MobileNetV2Config(
        image_size=32, depth_multiplier=0.35, num_labels=10)),
    "levit": lambda: hf.LevitForImageClassification(hf.LevitConfig(
        image_size=32, hidden_sizes=[32, 48], num_attention_heads=[2, 3], depths=[1, 1], key_dim=[8, 8],
        drop_path_rate=0, mlp_ratio=[2, 2], attention_ratio=[2, 2], down_ops=[["Subsample", 8, 2, 2, 2, 2]],
        num_labels=10)),
    # Added later: windowed and relative-position vision attention, bottlenecked and convolutional text
    # models, multi-query and ALiBi decoders, Einsum attention, weight-standardised convs.
    "sam_vision": lambda: hf.SamVisionModel(hf.SamVisionConfig(
        hidden_size=32, output_channels=16, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8,
        mlp_dim=64, window_size=2, global_attn_indexes=[1], use_rel_pos=True)),
    "vitdet": lambda: hf.VitDetModel(hf.VitDetConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2, image_size=32, pretrain_image_size=32,
        patch_size=8, window_size=2, window_block_indices=[0], use_relative_position_embeddings=True)),
    "mobilebert": text(hf.MobileBertConfig, hf.MobileBertForSequenceClassification, embedding_size=16,
                       intra_bottleneck_size=16, true_hidden_size=16, num_feedforward_networks=2),
    "squeezebert": text(hf.SqueezeBertConfig, hf.SqueezeBertForSequenceClassification, embedding_size=32,
                        q_groups=2, k_groups=2, v_groups=2, post_attention_groups=2, intermediate_groups=2,
                        output_groups=2),
    "convbert": text(hf.ConvBertConfig, hf.ConvBertForSequenceClassification, embedding_size=16, head_ratio=2,
                     conv_kernel_size=3),
    "roformer": text(hf.RoFormerConfig, hf.RoFormerForSequenceClassification, embedding_size=32),
    "xlnet": lambda: hf.XLNetForSequenceClassification(hf.XLNetConfig(vocab_size=128, d_model=32, n_layer=2, n_head=4,
                                                                     d_inner=64)),
    "gpt_bigcode": lambda: hf.GPTBigCodeForCausalLM(hf.GPTBigCodeConfig(vocab_size=128, n_embd=32, n_layer=2, n_head=4,
                                                                        n_positions=64, multi_query=True)),
    "mpt": lambda: hf.MptForCausalLM(hf.MptConfig(vocab_size=128, d_model=32, n_layers=2, n_heads=4, expansion_ratio=2,
                                                  max_seq_len=64)),
    # CvT indexes the drop-path rates of stage s by s: stage s needs at least s + 1 layers.
    "cvt": lambda: hf.CvtForImageClassification(hf.CvtConfig(
        embed_dim=[16, 16, 32], num_heads=[1, 1, 2], depth=[1, 2, 3], patch_sizes=[3, 3, 3], patch_stride=[2, 2, 2],
        patch_padding=[1, 1, 1], drop_path_rate=[0.0, 0.0, 0.0], mlp_ratio=[2.0, 2.0, 2.0], num_labels=10)),
    "focalnet": lambda: hf.FocalNetForImageClassification(hf.FocalNetConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], focal_levels=[2, 2], focal_windows=[3, 3],
        num_labels=10)),
    "pvt_v2": lambda: hf.PvtV2ForImageClassification(hf.PvtV2Config(
        image_size=32, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
        patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], num_labels=10)),
    "bit": lambda: hf.BitForImageClassification(hf.BitConfig(
        embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="preactivation", num_groups=4,
        num_labels=10)),
    "wavlm": lambda: hf.WavLMForSequenceClassification(hf.WavLMConfig(
        **SMALL_SPEECH, num_buckets=32, max_bucket_distance=64, classifier_proj_size=16)),
    # A third batch: local attention, decoders of today, separable and hierarchical vision attention,
    # convolutional and relative-position speech encoders, Fourier mixing, pooled attention,
    # a recurrent language model and a video transformer.
    "gpt_neo": lambda: hf.GPTNeoForCausalLM(hf.GPTNeoConfig(vocab_size=128, hidden_size=32, num_layers=2,
                                                            attention_types=[[["global", "local"], 1]], num_heads=4,
                                                            window_size=4, max_position_embeddings=64)),
    "biogpt": text(hf.BioGptConfig, hf.BioGptForCausalLM),
    "starcoder2": text(hf.Starcoder2Config, hf.Starcoder2ForCausalLM, num_key_value_heads=2),
    "cohere": text(hf.CohereConfig, hf.CohereForCausalLM, num_key_value_heads=2),
    "mobilevitv2": lambda: hf.MobileViTV2ForImageClassification(hf.MobileViTV2Config(
        image_size=64, width_multiplier=0.25, n_attn_blocks=[1, 1, 1], base_attn_unit_dims=[32, 48, 64],
        num_labels=10)),
    "siglip_vision": lambda: hf.SiglipVisionModel(hf.SiglipVisionConfig(**SMALL_VISION)),
    "dpt": lambda: hf.DPTForDepthEstimation(hf.DPTConfig(
        **{**SMALL_VISION, "num_hidden_layers": 4}, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 16, 32],
        fusion_hidden_size=16, head_in_index=-1, reassemble_factors=[4, 2, 1, 0.5])),
    "hiera": lambda: hf.HieraForImageClassification(hf.HieraConfig(
        embed_dim=16, image_size=[32, 32], patch_size=[3, 3], patch_stride=[2, 2], patch_padding=[1, 1], depths=[1, 1],
        num_heads=[1, 2], num_query_pool=1, masked_unit_size=[4, 4], masked_unit_attention=[True, False],
        num_labels=10)),
    "swiftformer": lambda: hf.SwiftFormerForImageClassification(hf.SwiftFormerConfig(
        image_size=32, depths=[1, 1, 1, 1], embed_dims=[16, 16, 32, 32], num_labels=10)),
    "sew_d": lambda: hf.SEWDForSequenceClassification(hf.SEWDConfig(
        **SMALL_SPEECH, squeeze_factor=2, max_position_embeddings=64, position_buckets=16, classifier_proj_size=16)),
    "wav2vec2_conformer": lambda: hf.Wav2Vec2ConformerForSequenceClassification(hf.Wav2Vec2ConformerConfig(
        **SMALL_SPEECH, position_embeddings_type="relative", conv_depthwise_kernel_size=3, classifier_proj_size=16)),
    "fnet": text(hf.FNetConfig, hf.FNetForSequenceClassification),
    "funnel": lambda: hf.FunnelForSequenceClassification(hf.FunnelConfig(
        vocab_size=128, block_sizes=[1, 1], d_model=32, n_head=4, d_head=8, d_inner=64, num_decoder_layers=1)),
    "rwkv": lambda: hf.RwkvForCausalLM(hf.RwkvConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2,
                                                     attention_hidden_size=32, intermediate_size=64, context_length=64)),
    "videomae": lambda: hf.VideoMAEForVideoClassification(hf.VideoMAEConfig(
        **SMALL_VISION, num_frames=4, tubelet_size=2, num_labels=10)),
    # A fourth batch: a detection transformer, depthwise-separable convs, a depth decoder, audio encoders
    # of spectrograms and of waveforms, and divided space-time attention.
    "detr": lambda: hf.DetrForObjectDetection(hf.DetrConfig(
        **small_detr())),
    "mobilenet_v1": lambda: hf.MobileNetV1ForImageClassification(hf.MobileNetV1Config(
        image_size=32, depth_multiplier=0.25, min_depth=8, num_labels=10)),
    "glpn": lambda: hf.GLPNForDepthEstimation(hf.GLPNConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=16)),
    "blip_vision": lambda: hf.BlipVisionModel(hf.BlipVisionConfig(**SMALL_VISION)),
    "hubert": lambda: hf.HubertForSequenceClassification(hf.HubertConfig(
        **SMALL_SPEECH, classifier_proj_size=16)),
    "ast": lambda: hf.ASTForAudioClassification(hf.ASTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=8,
        frequency_stride=8, time_stride=8, max_length=32, num_mel_bins=16, num_labels=5)),
    "timesformer": lambda: hf.TimesformerForVideoClassification(hf.TimesformerConfig(
        **SMALL_VISION, num_frames=2, num_labels=10)),
    # A fifth: monocular depth on a DINOv2 backbone, semantic segmentation with a pyramid pooling head, and
    # long-document and character-level text encoders.
    "depth_anything": lambda: hf.DepthAnythingForDepthEstimation(hf.DepthAnythingConfig(
        backbone_config=hf.Dinov2Config(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4,
                                        num_attention_heads=4, mlp_ratio=2, out_features=["stage1", "stage2", "stage3",
                                                                                          "stage4"], reshape_hidden_states=False),
        patch_size=8, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 16, 32], fusion_hidden_size=16,
        head_hidden_size=8)),
    "upernet": lambda: hf.UperNetForSemanticSegmentation(hf.UperNetConfig(
        backbone_config=hf.ConvNextConfig(num_stages=4, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1],
                                          out_features=["stage1", "stage2", "stage3", "stage4"]),
        hidden_size=16, pool_scales=[1, 2], use_auxiliary_head=False, num_labels=3)),
    "big_bird": text(hf.BigBirdConfig, hf.BigBirdForSequenceClassification, attention_type="original_full"),
    "longformer": text(hf.LongformerConfig, hf.LongformerForSequenceClassification, attention_window=4,
                       pad_token_id=1),
    "canine": lambda: hf.CanineModel(hf.CanineConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                     intermediate_size=64, downsampling_rate=2, num_hash_functions=2,
                                                     num_hash_buckets=64, local_transformer_stride=4)),
    "poolformer": lambda: hf.PoolFormerForImageClassification(hf.PoolFormerConfig(
        hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1], num_encoder_blocks=4, num_labels=10)),
    "data2vec_vision": lambda: hf.Data2VecVisionForImageClassification(hf.Data2VecVisionConfig(
        **SMALL_VISION, use_relative_position_bias=True, num_labels=10)),
    "granite": text(hf.GraniteConfig, hf.GraniteForCausalLM, num_key_value_heads=2),
    "persimmon": text(hf.PersimmonConfig, hf.PersimmonForCausalLM),
    "qwen2_moe": text(hf.Qwen2MoeConfig, hf.Qwen2MoeForCausalLM, num_key_value_heads=2, num_experts=4,
                      num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32),
    "modernbert": text(hf.ModernBertConfig, hf.ModernBertForSequenceClassification, pad_token_id=1,
                       global_attn_every_n_layers=2, local_attention=4),
    "swin2sr": lambda: hf.Swin2SRModel(hf.Swin2SRConfig(image_size=16, patch_size=1, embed_dim=16, depths=[1, 1],
                                                        num_heads=[2, 2], window_size=4, upscale=2)),
    "textnet": lambda: hf.TextNetModel(hf.TextNetConfig()),
    "nemotron": text(hf.NemotronConfig, hf.NemotronForCausalLM, num_key_value_heads=2),
    "olmo2": text(hf.Olmo2Config, hf.Olmo2ForCausalLM, num_key_value_heads=2),
    "dinov2_with_registers": lambda: hf.Dinov2WithRegistersModel(hf.Dinov2WithRegistersConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2,
        num_register_tokens=2)),
    "owlvit_vision": lambda: hf.OwlViTVisionModel(hf.OwlViTVisionConfig(**SMALL_VISION)),
    "donut_swin": lambda: hf.DonutSwinModel(hf.DonutSwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                                               num_heads=[2, 4], window_size=4)),
    "helium": text(hf.HeliumConfig, hf.HeliumForCausalLM, num_key_value_heads=2, head_dim=8),
    "gemma3_text": text(hf.Gemma3TextConfig, hf.Gemma3ForCausalLM, num_key_value_heads=2, head_dim=8, sliding_window=4),
    "cohere2": text(hf.Cohere2Config, hf.Cohere2ForCausalLM, num_key_value_heads=2, sliding_window=4),
    "smollm3": text(hf.SmolLM3Config, hf.SmolLM3ForCausalLM, num_key_value_heads=2, pad_token_id=1),
    "glm4": text(hf.Glm4Config, hf.Glm4ForCausalLM, num_key_value_heads=2, head_dim=8, pad_token_id=1),
    "exaone4": text(hf.Exaone4Config, hf.Exaone4ForCausalLM, num_key_value_heads=2, sliding_window=4),
    "ernie4_5": text(hf.Ernie4_5Config, hf.Ernie4_5ForCausalLM, num_key_value_heads=2, head_dim=8),
    "rembert": text(hf.RemBertConfig, hf.RemBertForSequenceClassification, input_embedding_size=16,
                    output_embedding_size=16),
    "pvt": lambda: hf.PvtForImageClassification(hf.PvtConfig(
        image_size=32, num_encoder_blocks=2, depths=[1, 1], sequence_reduction_ratios=[2, 1], hidden_sizes=[16, 32],
        patch_sizes=[4, 2], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2], num_labels=10)),
    "conditional_detr": lambda: hf.ConditionalDetrForObjectDetection(hf.ConditionalDetrConfig(
        **small_detr())),
    "table_transformer": lambda: hf.TableTransformerForObjectDetection(hf.TableTransformerConfig(
        **small_detr())),
    "data2vec_audio": lambda: hf.Data2VecAudioForSequenceClassification(hf.Data2VecAudioConfig(
        **SMALL_SPEECH, classifier_proj_size=16, conv_pos_kernel_size=3)),
    "unispeech_sat": lambda: hf.UniSpeechSatForSequenceClassification(hf.UniSpeechSatConfig(
        **SMALL_SPEECH, classifier_proj_size=16)),
    "sew": lambda: hf.SEWForSequenceClassification(hf.SEWConfig(
        **SMALL_SPEECH, classifier_proj_size=16, squeeze_factor=2)),
    "vit_msn": lambda: hf.ViTMSNForImageClassification(hf.ViTMSNConfig(**SMALL_VISION, num_labels=10)),
    "hgnet_v2": lambda: hf.HGNetV2ForImageClassification(hf.HGNetV2Config(
        stem_channels=[3, 16, 16], stage_in_channels=[16, 32], stage_mid_channels=[16, 32], stage_out_channels=[32, 64],
        stage_num_blocks=[1, 1], stage_numb_of_layers=[2, 2], stage_kernel_size=[3, 3], stage_downsample=[False, True],
        stage_light_block=[False, True], hidden_sizes=[32, 64], depths=[1, 1], num_labels=10)),
    "dinov3_vit": lambda: hf.DINOv3ViTModel(hf.DINOv3ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_register_tokens=2)),
    "dinov3_convnext": lambda: hf.DINOv3ConvNextModel(hf.DINOv3ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1])),
    "ijepa": lambda: hf.IJepaModel(hf.IJepaConfig(**SMALL_VISION)),
    "esm": text(hf.EsmConfig, hf.EsmForSequenceClassification, position_embedding_type="rotary", pad_token_id=1,
                mask_token_id=2),
    "lfm2": text(hf.Lfm2Config, hf.Lfm2ForCausalLM, num_key_value_heads=2, layer_types=["conv", "full_attention"]),
    "apertus": text(hf.ApertusConfig, hf.ApertusForCausalLM, num_key_value_heads=2),
    "minicpm3": text(hf.MiniCPM3Config, hf.MiniCPM3ForCausalLM, num_key_value_heads=4, q_lora_rank=16, kv_lora_rank=16,
                     qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8),
    "deepseek_v2": text(hf.DeepseekV2Config, hf.DeepseekV2ForCausalLM, num_key_value_heads=4, q_lora_rank=16,
                        kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, first_k_dense_replace=2),
    "openai_gpt": lambda: hf.OpenAIGPTLMHeadModel(hf.OpenAIGPTConfig(vocab_size=128, n_embd=32, n_layer=2, n_head=4,
                                                                      n_positions=64)),
    "vitpose": lambda: hf.VitPoseForPoseEstimation(hf.VitPoseConfig(backbone_config=hf.VitPoseBackboneConfig(
        image_size=[32, 32], patch_size=[8, 8], hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2,
        out_indices=[2]), num_labels=4)),
    "nomic_bert": text(hf.NomicBertConfig, hf.NomicBertModel),
    "bitnet": text(hf.BitNetConfig, hf.BitNetForCausalLM, num_key_value_heads=2),
    # PaddleOCR's and PaddleDetection's models as transformers ports them, at their default (mobile) sizes.
    "pp_lcnet": lambda: hf.PPLCNetForImageClassification(hf.PPLCNetConfig()),
    "pp_ocrv5_mobile_det": lambda: hf.PPOCRV5MobileDetForObjectDetection(hf.PPOCRV5MobileDetConfig()),
    "pp_ocrv6_tiny_rec": lambda: hf.PPOCRV6TinyRecForTextRecognition(hf.PPOCRV6TinyRecConfig()),
    "rt_detr": lambda: hf.RTDetrForObjectDetection(hf.RTDetrConfig(**small_rt_detr())),
    "vitmatte": lambda: hf.VitMatteForImageMatting(hf.VitMatteConfig(
        backbone_config=hf.VitDetConfig(image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, mlp_ratio=2, num_channels=4, out_features=["stage2"]),
        hidden_size=32, convstream_hidden_sizes=[8, 16, 32], fusion_hidden_sizes=[32, 16, 8, 8])),
    "mgp_str": lambda: hf.MgpstrForSceneTextRecognition(hf.MgpstrConfig(
        image_size=[32, 128], patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2,
        max_token_length=10, num_character_labels=38, num_bpe_labels=50, num_wordpiece_labels=50)),
    "diffllama": text(hf.DiffLlamaConfig, hf.DiffLlamaForCausalLM, num_key_value_heads=2),
    "vaultgemma": text(hf.VaultGemmaConfig, hf.VaultGemmaForCausalLM, num_key_value_heads=2, head_dim=8),
    "patchtst": lambda: hf.PatchTSTForClassification(hf.PatchTSTConfig(
        num_input_channels=3, context_length=32, patch_length=8, patch_stride=8, d_model=32, num_attention_heads=4,
        num_hidden_layers=2, ffn_dim=64, num_targets=4)),
    "vivit": lambda: hf.VivitForVideoClassification(hf.VivitConfig(
        image_size=32, num_frames=4, tubelet_size=[2, 8, 8], hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=10)),
    # FastConformer (NVIDIA's Parakeet) and LASR speech encoders with a CTC head, over 16 mel bins.
    "parakeet_ctc": lambda: hf.ParakeetForCTC(hf.ParakeetCTCConfig(encoder_config=dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, intermediate_size=64,
        subsampling_conv_channels=16, num_mel_bins=16, conv_kernel_size=9), vocab_size=32)),
    "lasr_ctc": lambda: hf.LasrForCTC(hf.LasrCTCConfig(encoder_config=dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, intermediate_size=64,
        subsampling_conv_channels=16, num_mel_bins=16, conv_kernel_size=8), vocab_size=32)),
    "pp_lcnet_v3": lambda: hf.PPLCNetV3Backbone(hf.PPLCNetV3Config()),
    "patchtsmixer": lambda: hf.PatchTSMixerForTimeSeriesClassification(hf.PatchTSMixerConfig(
        context_length=32, patch_length=8, patch_stride=8, num_input_channels=3, d_model=16, num_layers=2,
        num_targets=4)),
    "olmo3": text(hf.Olmo3Config, hf.Olmo3ForCausalLM, num_key_value_heads=2, sliding_window=4),
    "seed_oss": text(hf.SeedOssConfig, hf.SeedOssForCausalLM, num_key_value_heads=2, head_dim=8),
    "ministral3": text(hf.Ministral3Config, hf.Ministral3ForCausalLM, num_key_value_heads=2, head_dim=8),
    "eurobert": text(hf.EuroBertConfig, hf.EuroBertForSequenceClassification, num_key_value_heads=4, pad_token_id=1),
    "modernbert_decoder": text(hf.ModernBertDecoderConfig, hf.ModernBertDecoderForCausalLM,
                               global_attn_every_n_layers=2, local_attention=4, pad_token_id=1),
    "arcee": text(hf.ArceeConfig, hf.ArceeForCausalLM, num_key_value_heads=2),
    "hunyuan_dense": text(hf.HunYuanDenseV1Config, hf.HunYuanDenseV1ForCausalLM, num_key_value_heads=2, head_dim=8),
    "doge": text(hf.DogeConfig, hf.DogeForCausalLM, num_key_value_heads=2, keep_window_size=8),
    "aimv2_vision": lambda: hf.Aimv2VisionModel(hf.Aimv2VisionConfig(**SMALL_VISION)),
    "mlcd_vision": lambda: hf.MLCDVisionModel(hf.MLCDVisionConfig(**SMALL_VISION)),
    "metaclip2_vision": lambda: hf.MetaClip2VisionModel(hf.MetaClip2VisionConfig(**SMALL_VISION)),
    "eomt": lambda: hf.EomtForUniversalSegmentation(hf.EomtConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=4, image_size=32, patch_size=8, num_blocks=2,
        num_queries=5, num_register_tokens=2, num_upscale_blocks=1, num_labels=3)),
    "vjepa2": lambda: hf.VJEPA2Model(hf.VJEPA2Config(
        patch_size=8, crop_size=32, frames_per_clip=4, tubelet_size=2, hidden_size=32, num_attention_heads=4,
        num_hidden_layers=2, mlp_ratio=2, pred_hidden_size=16, pred_num_attention_heads=2, pred_num_hidden_layers=1,
        num_pooler_layers=1)),
    "dac": lambda: hf.DacModel(hf.DacConfig(
        encoder_hidden_size=8, downsampling_ratios=[2, 2], decoder_hidden_size=32, upsampling_ratios=[2, 2],
        n_codebooks=2, codebook_size=16, codebook_dim=4, hidden_size=32)),
    "gte": text(hf.GteConfig, hf.GteModel, pad_token_id=1),
    "wav2vec2_bert": lambda: hf.Wav2Vec2BertModel(hf.Wav2Vec2BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        feature_projection_input_dim=16, conv_depthwise_kernel_size=3, output_hidden_size=32)),
    "qwen2_audio_encoder": lambda: hf.Qwen2AudioEncoder(hf.Qwen2AudioEncoderConfig(
        num_mel_bins=16, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, d_model=32,
        max_source_positions=16)),
    "unispeech": lambda: hf.UniSpeechForSequenceClassification(hf.UniSpeechConfig(
        **SMALL_SPEECH, classifier_proj_size=16)),
    "owlv2_vision": lambda: hf.Owlv2VisionModel(hf.Owlv2VisionConfig(**SMALL_VISION)),
    "florence2_vision": lambda: hf.Florence2VisionBackbone(hf.Florence2VisionConfig(
        depths=[1, 1], patch_size=[7, 3], patch_stride=[4, 2], patch_padding=[3, 1], patch_prenorm=[False, True],
        embed_dim=[16, 32], num_heads=[2, 4], num_groups=[2, 4], window_size=4, projection_dim=32)),
    "smolvlm_vision": lambda: hf.SmolVLMVisionTransformer(hf.SmolVLMVisionConfig(**SMALL_VISION)),
    "megatron_bert": text(hf.MegatronBertConfig, hf.MegatronBertForSequenceClassification),
    "ibert": text(hf.IBertConfig, hf.IBertForSequenceClassification, pad_token_id=1),
    "xlm_roberta_xl": text(hf.XLMRobertaXLConfig, hf.XLMRobertaXLForSequenceClassification, pad_token_id=1),
    "mt5_encoder": lambda: hf.MT5EncoderModel(hf.MT5Config(**SMALL_T5)),
    "umt5_encoder": lambda: hf.UMT5EncoderModel(hf.UMT5Config(**SMALL_T5)),
    "longt5_encoder": lambda: hf.LongT5EncoderModel(hf.LongT5Config(**SMALL_T5, local_radius=4)),
    "mbart_encoder": lambda: hf.MBartModel(hf.MBartConfig(
        vocab_size=128, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)).get_encoder(),
    "xglm": lambda: hf.XGLMForCausalLM(hf.XGLMConfig(vocab_size=128, d_model=32, num_layers=2, attention_heads=4,
                                                      ffn_dim=64, max_position_embeddings=64)),
    "ctrl": lambda: hf.CTRLLMHeadModel(hf.CTRLConfig(vocab_size=128, n_embd=32, n_layer=2, n_head=4, dff=64,
                                                      n_positions=64)),
    "flaubert": lambda: hf.FlaubertForSequenceClassification(hf.FlaubertConfig(
        vocab_size=128, emb_dim=32, n_layers=2, n_heads=4, max_position_embeddings=64, pad_index=1)),
    # Multi-head latent attention (as MiniCPM3's): DeepSeek-V3's and GLM-4.7-Flash's, their layers dense.
    "deepseek_v3": text(hf.DeepseekV3Config, hf.DeepseekV3ForCausalLM, num_key_value_heads=4, q_lora_rank=16,
                        kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, first_k_dense_replace=2),
    "glm4_moe_lite": text(hf.Glm4MoeLiteConfig, hf.Glm4MoeLiteForCausalLM, num_key_value_heads=4, q_lora_rank=16,
                          kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8,
                          mlp_layer_types=["dense", "dense"]),
    # A fifteenth batch: encoders, mixtures of experts and state-space models.
    "nystromformer": text(hf.NystromformerConfig, hf.NystromformerForSequenceClassification, num_landmarks=4,
                          segment_means_seq_len=TOKENS),
    "ernie": text(hf.ErnieConfig, hf.ErnieForSequenceClassification),
    "data2vec_text": text(hf.Data2VecTextConfig, hf.Data2VecTextForSequenceClassification, pad_token_id=1),
    "luke": text(hf.LukeConfig, hf.LukeForSequenceClassification, entity_vocab_size=16, entity_emb_size=16,
                 pad_token_id=1),
    "qwen3_moe": text(hf.Qwen3MoeConfig, hf.Qwen3MoeForCausalLM, num_key_value_heads=2, num_experts=4,
                      num_experts_per_tok=2, moe_intermediate_size=32, head_dim=8),
    "olmoe": text(hf.OlmoeConfig, hf.OlmoeForCausalLM, num_experts=4, num_experts_per_tok=2, eos_token_id=2),
    "granitemoe": text(hf.GraniteMoeConfig, hf.GraniteMoeForCausalLM, num_local_experts=4, num_experts_per_tok=2),
    "gpt_oss": text(hf.GptOssConfig, hf.GptOssForCausalLM, num_key_value_heads=2, num_local_experts=4,
                    num_experts_per_tok=2, head_dim=8, layer_types=["sliding_attention", "full_attention"],
                    sliding_window=8),
    "mamba2": lambda: hf.Mamba2ForCausalLM(hf.Mamba2Config(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_heads=8, head_dim=8, state_size=16, n_groups=1,
        expand=2, chunk_size=4)),
    "falcon_mamba": lambda: hf.FalconMambaForCausalLM(hf.FalconMambaConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, state_size=8, expand=2)),
    "recurrent_gemma": text(hf.RecurrentGemmaConfig, hf.RecurrentGemmaForCausalLM, lru_width=32,
                            attention_window_size=8, num_key_value_heads=4, block_types=["recurrent", "attention"]),
    # A sixteenth batch: more encoders (layout and markup among them), GLM, CLIPSeg's vision model and
    # Speech2Text's encoder.
    "glm": text(hf.GlmConfig, hf.GlmForCausalLM, num_key_value_heads=2, head_dim=8, pad_token_id=0),
    "xlm": lambda: hf.XLMForSequenceClassification(hf.XLMConfig(
        vocab_size=128, emb_dim=32, n_layers=2, n_heads=4, max_position_embeddings=64)),
    "layoutlm": text(hf.LayoutLMConfig, hf.LayoutLMForSequenceClassification),
    "markuplm": text(hf.MarkupLMConfig, hf.MarkupLMForSequenceClassification, pad_token_id=1),
    "splinter": text(hf.SplinterConfig, hf.SplinterModel),
    "clipseg_vision": lambda: hf.CLIPSegVisionModel(hf.CLIPSegVisionConfig(**SMALL_VISION)),
    "speech_to_text_encoder": lambda: hf.Speech2TextModel(hf.Speech2TextConfig(
        **SMALL_SEQ2SEQ, input_feat_per_channel=16, input_channels=1, conv_channels=32,
        max_source_positions=64)).get_encoder(),
    # A seventeenth batch: the encoders of translation and summarisation models, RoCBERT and Moonshine's
    # audio encoder.
    "m2m_100_encoder": lambda: hf.M2M100Model(hf.M2M100Config(**SMALL_SEQ2SEQ)).get_encoder(),
    "pegasus_encoder": lambda: hf.PegasusModel(hf.PegasusConfig(**SMALL_SEQ2SEQ)).get_encoder(),
    "marian_encoder": lambda: hf.MarianModel(hf.MarianConfig(
        **SMALL_SEQ2SEQ, pad_token_id=1, decoder_start_token_id=1)).get_encoder(),
    "led_encoder": lambda: hf.LEDModel(hf.LEDConfig(
        **SMALL_SEQ2SEQ, max_encoder_position_embeddings=64, max_decoder_position_embeddings=64,
        attention_window=[4, 4])).get_encoder(),
    "roc_bert": text(hf.RoCBertConfig, hf.RoCBertForSequenceClassification, pronunciation_vocab_size=16,
                     shape_vocab_size=16, pronunciation_embed_dim=8, shape_embed_dim=8),
    "moonshine_encoder": lambda: hf.MoonshineModel(hf.MoonshineConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, encoder_num_hidden_layers=2,
        decoder_num_hidden_layers=1, encoder_num_attention_heads=4, decoder_num_attention_heads=4)).get_encoder(),
    # RT-DETR v2, with two decoder layers: with one, transformers' tied box heads do not build.
    "rt_detr_v2": lambda: hf.RTDetrV2ForObjectDetection(hf.RTDetrV2Config(**small_rt_detr(decoder_layers=2))),
}
# Inputs other than token ids [N, TOKENS]: their shapes without the batch.
INPUTS = {"vit": (3, 32, 32), "deit": (3, 32, 32), "beit": (3, 32, 32), "dinov2": (3, 32, 32), "swin": (3, 32, 32),
          "convnext": (3, 32, 32), "resnet": (3, 32, 32), "mobilevit": (3, 32, 32), "segformer": (3, 32, 32),
          "clip_vision": (3, 32, 32), "whisper_encoder": (16, 20), "wav2vec2": (400,),
          "yolos": (3, 32, 32), "swinv2": (3, 32, 32), "convnextv2": (3, 32, 32), "efficientnet": (3, 32, 32),
          "regnet": (3, 32, 32), "mobilenet_v2": (3, 32, 32), "levit": (3, 32, 32), "sam_vision": (3, 32, 32),
          "vitdet": (3, 32, 32), "cvt": (3, 32, 32), "focalnet": (3, 32, 32), "pvt_v2": (3, 32, 32),
          "bit": (3, 32, 32), "wavlm": (400,), "mobilevitv2": (3, 64, 64), "siglip_vision": (3, 32, 32),
          "dpt": (3, 32, 32), "hiera": (3, 32, 32), "swiftformer": (3, 32, 32), "sew_d": (400,),
          "wav2vec2_conformer": (400,), "videomae": (4, 3, 32, 32), "detr": (3, 64, 64), "mobilenet_v1": (3, 32, 32),
          "glpn": (3, 32, 32), "blip_vision": (3, 32, 32), "hubert": (400,), "ast": (32, 16),
          "timesformer": (2, 3, 32, 32), "depth_anything": (3, 32, 32), "upernet": (3, 64, 64),
          "poolformer": (3, 32, 32), "data2vec_vision": (3, 32, 32), "swin2sr": (3, 16, 16), "textnet": (3, 64, 64),
          "dinov2_with_registers": (3, 32, 32), "owlvit_vision": (3, 32, 32), "donut_swin": (3, 32, 32),
          "pvt": (3, 32, 32), "conditional_detr": (3, 64, 64), "table_transformer": (3, 64, 64),
          "data2vec_audio": (400,), "unispeech_sat": (400,), "sew": (400,), "vit_msn": (3, 32, 32),
          "hgnet_v2": (3, 32, 32), "dinov3_vit": (3, 32, 32), "dinov3_convnext": (3, 32, 32), "ijepa": (3, 32, 32),
          "vitpose": (3, 32, 32), "pp_lcnet": (3, 64, 64), "pp_ocrv5_mobile_det": (3, 64, 64),
          "pp_ocrv6_tiny_rec": (3, 48, 160), "rt_detr": (3, 64, 64), "vitmatte": (4, 32, 32), "mgp_str": (3, 32, 128),
          "patchtst": (32, 3), "vivit": (4, 3, 32, 32), "parakeet_ctc": (64, 16), "lasr_ctc": (64, 16),
          "pp_lcnet_v3": (3, 64, 64), "patchtsmixer": (32, 3), "aimv2_vision": (3, 32, 32), "mlcd_vision": (3, 32, 32),
          "metaclip2_vision": (3, 32, 32), "eomt": (3, 32, 32), "vjepa2": (4, 3, 32, 32), "dac": (1, 256),
          "wav2vec2_bert": (20, 16), "qwen2_audio_encoder": (16, 32), "unispeech": (400,),
          "owlv2_vision": (3, 32, 32), "florence2_vision": (3, 32, 32), "smolvlm_vision": (3, 32, 32),
          "clipseg_vision": (3, 32, 32), "speech_to_text_encoder": (20, 16), "moonshine_encoder": (2000,),
          "rt_detr_v2": (3, 64, 64)}


def first_line(exc: Exception) -> str:
    """The first line of an error's message (some have none)."""
    return (str(exc).splitlines() or [""])[0][:200]


class FirstOutput(nn.Module):
    """The model with its one input and the first tensor of its output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        out = out[0] if isinstance(out, tuple) else next(v for v in out.values() if isinstance(v, (torch.Tensor, tuple)))
        return out[0] if isinstance(out, tuple) else out  # MGP-STR's logits: one tensor per head


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/hf")
    folder.mkdir(parents=True, exist_ok=True)
    opset = int(os.environ.get("PROBE_OPSET", 18))  # the dynamo exporter's; from 23 it writes ONNX's Attention
    warnings.simplefilter("ignore")
    for name, build in MODELS.items():
        if sys.argv[2:] and name not in sys.argv[2:]:
            continue
        torch.manual_seed(0)
        try:
            model = FirstOutput(build().eval()).eval()
        except Exception as exc:  # noqa: BLE001 - a probe reports every model
            print(f"{name}: BUILD FAILED {type(exc).__name__}: {first_line(exc)}", flush=True)
            continue
        for module in model.modules():  # BatchNorm statistics that are not the identity
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
        shape = INPUTS.get(name)
        x = torch.randint(0, 100, (2, TOKENS)) if shape is None else torch.randn(2, *shape)
        for exporter in ("ts", "dynamo"):
            path = folder / f"{name}.{exporter}.onnx"
            try:
                with torch.no_grad():
                    if exporter == "ts":
                        # The TorchScript exporter cannot write scaled_dot_product_attention with grouped
                        # key/value heads: the eager attention, as such exports use.
                        model.model.config._attn_implementation = "eager"
                        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17, input_names=["x"],
                                          output_names=["y"], dynamic_axes={"x": {0: "N"}})
                    else:
                        model.model.config._attn_implementation = "sdpa"
                        torch.onnx.export(model, (x,), path, dynamo=True, opset_version=opset, input_names=["x"],
                                          output_names=["y"], dynamic_shapes=({0: torch.export.Dim("N", min=2)},))
                print(f"{path.name}: exported", flush=True)
            except Exception as exc:  # noqa: BLE001 - a probe reports every model
                path.unlink(missing_ok=True)
                print(f"{path.name}: EXPORT FAILED {type(exc).__name__}: {first_line(exc)}", flush=True)


if __name__ == "__main__":
    main()
