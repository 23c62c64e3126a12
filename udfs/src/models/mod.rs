//! The proxy models: a CIFAR-style ResNet for images and a fastText-style
//! classifier for text, with the optimizer that trains them.

pub mod resnet;
pub mod image_trainer;
pub mod sgd;
pub mod fasttext;
