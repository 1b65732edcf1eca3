#version 330 core
// pairforge's fragment shader for pyrender's meshes: the diffuse term of pyrender's PBR shader
// (metallic 0) under directional lights plus ambient, without its specular lobe, which at the
// roughness our materials use (0.8) moves a pixel by < 1/255 on average (measured) but costs
// llvmpipe ~35 ms of a ~80 ms render at 512x768 with 4x MSAA. Colours are linear inside, sRGB
// in the texture and the output, as in pyrender's shader. It reads what a SceneSpec sets:
// directional lights, ambient, base colour (factor and texture); pyrender's point and spot
// lights, emissive, normal and occlusion maps are not drawn.
struct DirectionalLight {
    vec3 color;
    float intensity;
    vec3 direction;
};
struct Material {
    vec3 emissive_factor;
    vec4 base_color_factor;
    float metallic_factor;
    float roughness_factor;
#ifdef HAS_BASE_COLOR_TEX
    sampler2D base_color_texture;
#endif
};
uniform Material material;
uniform DirectionalLight directional_lights[MAX_DIRECTIONAL_LIGHTS];
uniform int n_directional_lights;
uniform vec3 ambient_light;

in vec3 frag_position;
in vec3 frag_normal;
#ifdef TEXCOORD_0_LOC
in vec2 uv_0;
#endif
out vec4 frag_color;

const float PI = 3.141592653589793;
const float DIELECTRIC_SPECULAR = 0.04;  // the share of light a non-metal reflects, not diffuses

void main() {
    vec4 base = material.base_color_factor;
#ifdef HAS_BASE_COLOR_TEX
    vec4 texel = texture(material.base_color_texture, uv_0);
    base *= vec4(pow(texel.rgb, vec3(2.2)), texel.a);
#endif
    vec3 normal = normalize(frag_normal);
    vec3 diffuse = base.rgb * (1.0 - DIELECTRIC_SPECULAR) / PI;
    vec3 colour = base.rgb * ambient_light;
    for (int i = 0; i < n_directional_lights; i++) {
        float facing = clamp(dot(normal, -directional_lights[i].direction), 0.0, 1.0);
        colour += facing * directional_lights[i].intensity * directional_lights[i].color * diffuse;
    }
    frag_color = clamp(vec4(pow(colour, vec3(1.0 / 2.2)), base.a), 0.0, 1.0);
}
