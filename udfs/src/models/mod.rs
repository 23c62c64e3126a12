//! The models: the proxies (a CIFAR-style ResNet for images and a
//! fastText-style classifier for text) with the optimizer that trains them,
//! and a pretrained sentence encoder for text embeddings.

pub mod fasttext;
pub mod hashed_table;
pub mod image_trainer;
pub mod resnet;
pub mod sgd;
pub mod text_encoder;
