import pytest

from lightning_sdc.registry import Registry


def test_register_build_alias_and_errors():
    reg = Registry("widget")

    @reg.register("Foo", "foo-1")
    def foo(x=1):
        return ("foo", x)

    assert reg.build("foo", x=3) == ("foo", 3)
    assert reg.build("FOO-1") == ("foo", 1)
    assert reg.names() == ["Foo"]
    with pytest.raises(KeyError, match="unknown widget 'bar'; allowed: Foo"):
        reg.get("bar")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("foo-1")(lambda: None)


def test_package_registries_are_complete():
    from lightning_sdc import list_datasets, list_methods, list_networks

    assert {"digits", "mnist5k", "mnist", "fashionmnist", "svhn", "cifar10", "cifar100", "tinyimagenet"} <= set(
        list_datasets()
    )
    assert {"ConvNet", "ConvNetD4", "LeNet", "AlexNet", "VGG11", "ResNet18", "MLP"} <= set(list_networks())
    assert {"DC", "DSA", "DSAC", "MTT", "FTD", "TESLA", "DATM"} <= set(list_methods())
